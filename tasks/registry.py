"""Task registry: built-in families are found by scanning this package; others by entry points.

A third-party package adds a task by exposing a `Task` subclass under the `evalharness.tasks`
entry-point group; nothing in the engine changes.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable

from evalharness.errors import InputError

from .base import Task

_REGISTRY: dict[str, type[Task]] = {}
_DISCOVERED = False


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available by its `name`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"task name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module(__package__ or "evalharness.tasks")
    for module in pkgutil.iter_modules(package.__path__):
        if module.ispkg:
            importlib.import_module(f"{package.__name__}.{module.name}")
    for entry in importlib.metadata.entry_points(group="evalharness.tasks"):
        loaded: Callable | type[Task] = entry.load()
        if isinstance(loaded, type) and issubclass(loaded, Task):
            register_task(loaded)


def available_tasks() -> dict[str, type[Task]]:
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_task_class(name: str) -> type[Task]:
    tasks = available_tasks()
    if name not in tasks:
        raise InputError(f"unknown task {name!r}; available: {', '.join(tasks) or 'none'}")
    return tasks[name]
