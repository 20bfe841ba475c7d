"""Task registry: built-in families are found by scanning this package; others by entry points.

A third-party package adds a task by exposing a `Task` subclass under the `evalharness.tasks`
entry-point group; nothing in the engine changes. A folder with a task.yaml (or the file
itself) is a task too, without Python (`tasks/declarative`): `--tasks path/to/folder`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evalharness.errors import InputError, did_you_mean

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
    """A registered task by name, or the task declared by a folder's task.yaml (a path)."""
    tasks = available_tasks()
    if name in tasks:
        return tasks[name]
    location = Path(name).expanduser()
    if location.is_dir() or location.suffix in (".yaml", ".yml") or "/" in name:
        return _declared_task(location, tasks)
    raise InputError(
        f"unknown task {name!r}{did_you_mean(name, tasks)}; available: {', '.join(tasks) or 'none'}"
    )


def _declared_task(location: Path, tasks: Mapping[str, type[Task]]) -> type[Task]:
    from .declarative.loader import task_file
    from .declarative.task import DeclarativeTask, class_from_folder

    if location.is_dir() and not task_file(location).is_file():
        raise InputError(f"--tasks {location}: no task.yaml in this folder")
    if not location.exists():
        raise InputError(f"--tasks {location}: no such task folder or file")
    cls = class_from_folder(location)
    known = tasks.get(cls.name)
    if known is not None and not issubclass(known, DeclarativeTask):
        raise InputError(
            f"{cls.spec.lines.where('name')}: field 'name': {cls.name!r} is a built-in task; "
            "choose another name"
        )
    return cls


def stored_task_class(name: str, settings: Mapping[str, Any] | None = None) -> type[Task] | None:
    """The class that reads a stored task's results: the registered one, else (for a run of a
    task.yaml folder, whose settings say `declarative`) the shared declarative reader, else
    None (a task no longer installed)."""
    tasks = available_tasks()
    if name in tasks:
        return tasks[name]
    if settings and settings.get("declarative"):
        from .declarative.task import DeclarativeTask

        return DeclarativeTask
    return None
