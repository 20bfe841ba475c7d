"""Tasks without Python: a folder with task.yaml and its data (see `loader.py` for the fields),
or an lm-evaluation-harness task YAML as published (`lm_eval_yaml.py`, `lm_eval_task.py`).

The shipped examples (`examples/*/task.yaml`) are registered by name (`example_rubric`,
`example_mc`); any other folder or YAML runs as `--tasks PATH` (`sources.py` says which kind).
"""

from pathlib import Path

from ..registry import register_task
from .task import DeclarativeTask, build_task_class, class_from_folder

EXAMPLES = Path(__file__).resolve().parent / "examples"

for _folder in sorted(p for p in EXAMPLES.iterdir() if (p / "task.yaml").is_file()):
    register_task(class_from_folder(_folder))

__all__ = ["EXAMPLES", "DeclarativeTask", "build_task_class", "class_from_folder"]
