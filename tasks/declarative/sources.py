"""What a path given to `--tasks` declares: a task.yaml folder, one YAML file, or a folder of
lm-eval task YAMLs.

A YAML file is an lm-eval task when it has a field only lm-eval has (`task`, `include`,
`dataset_path`, `doc_to_text`, ...; see `lm_eval_yaml.LM_EVAL_KEYS`), else a task.yaml. A
folder without task.yaml stands for every lm-eval task YAML under it, found as lm-eval's
`TaskManager(include_path=...)` finds them (`**/*.yaml`, includes merged, a `task` name);
group YAMLs and YAMLs without a task name (bases meant for `include:`) are not tasks.
"""

from __future__ import annotations

from pathlib import Path

from evalharness.errors import InputError

from ..base import Task
from .lm_eval_yaml import is_lm_eval_config, read_config
from .loader import task_file

IGNORED_FOLDERS = {"__pycache__", ".ipynb_checkpoints"}


def classes_at(location: Path) -> list[type[Task]]:
    """The task classes a path declares (one, or one per lm-eval task YAML in a folder)."""
    from .task import class_from_folder

    if not location.exists():
        raise InputError(f"--tasks {location}: no such task folder or file")
    if location.is_dir():
        if task_file(location).is_file():
            return [class_from_folder(location)]
        found = lm_eval_task_files(location)
        if not found:
            raise InputError(
                f"--tasks {location}: no task.yaml in this folder (nor lm-eval task YAMLs)"
            )
        return [_lm_eval_class(path) for path in found]
    if is_lm_eval_yaml(location):
        return [_lm_eval_class(location)]
    return [class_from_folder(location)]


def is_lm_eval_yaml(path: Path) -> bool:
    raw = read_config(path)
    return raw is not None and is_lm_eval_config(raw)


def is_lm_eval_source(location: Path) -> bool:
    """Whether `--tasks LOCATION` runs lm-eval task YAMLs (which take `num_fewshot`)."""
    if location.is_dir():
        return not task_file(location).is_file() and bool(lm_eval_task_files(location))
    return location.is_file() and location.suffix in (".yaml", ".yml") and is_lm_eval_yaml(location)


def lm_eval_task_files(folder: Path) -> list[Path]:
    """Every YAML under `folder` whose merged config names a task, in lm-eval's order."""
    from .lm_eval_yaml import _merged

    found = []
    candidates = sorted(
        (p for p in folder.glob("**/*.yaml") if not IGNORED_FOLDERS & set(p.parts)),
        key=lambda p: p.as_posix(),
    )
    for path in candidates:
        raw = read_config(path)
        if raw is None or not is_lm_eval_config(raw):
            continue
        config, _ = _merged(path, (), {})
        if isinstance(config.get("task"), str) and not {"group", "class"} & set(config):
            found.append(path)
    return found


def _lm_eval_class(path: Path) -> type[Task]:
    from .lm_eval_task import lm_eval_task_class

    return lm_eval_task_class(path)
