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
    """A registered task by name, or the task declared by a path: a task.yaml folder or file,
    or an lm-eval task YAML."""
    classes = task_classes(name)
    if len(classes) != 1:
        raise InputError(
            f"--tasks {name}: holds {len(classes)} lm-eval tasks "
            f"({', '.join(c.name for c in classes)}); name one of their YAML files"
        )
    return classes[0]


def task_classes(name: str) -> list[type[Task]]:
    """What `--tasks NAME` runs: a registered task, the task a task.yaml folder or file or an
    lm-eval task YAML declares, or every lm-eval task YAML in a folder."""
    tasks = available_tasks()
    if name in tasks:
        return [tasks[name]]
    location = Path(name).expanduser()
    if location.is_dir() or location.suffix in (".yaml", ".yml") or "/" in name:
        return _declared_tasks(location, tasks)
    raise InputError(
        f"unknown task {name!r}{did_you_mean(name, tasks)}; available: {', '.join(tasks) or 'none'}"
    )


def _declared_tasks(location: Path, tasks: Mapping[str, type[Task]]) -> list[type[Task]]:
    from .declarative.sources import classes_at
    from .declarative.task import DeclarativeTask

    classes = classes_at(location)
    seen: set[str] = set()
    for cls in classes:
        known = tasks.get(cls.name)
        if known is not None and not issubclass(known, DeclarativeTask):
            raise InputError(
                f"{_where_named(cls)}: {cls.name!r} is a built-in task; choose another name"
            )
        if cls.name in seen:
            raise InputError(f"--tasks {location}: two YAML files name the task {cls.name!r}")
        seen.add(cls.name)
    return classes


def _where_named(cls: type[Task]) -> str:
    """`file:line: field ...` of the field naming a declared task (task.yaml's `name`, an
    lm-eval YAML's `task`)."""
    spec = getattr(cls, "spec", None)
    if spec is not None:
        return f"{spec.lines.where('name')}: field 'name'"
    lm_spec = getattr(cls, "lm_spec", None)
    if lm_spec is not None:
        return f"{lm_spec.where('task')}: field 'task'"
    return cls.name


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
