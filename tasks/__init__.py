"""Task families, one folder each (spec, authored sample data, code); see `registry`."""

from .base import JudgeItem, Outcome, Sample, SampleView, Task, TaskData, TaskResult
from .registry import available_tasks, get_task_class, register_task

__all__ = [
    "JudgeItem",
    "Outcome",
    "Sample",
    "SampleView",
    "Task",
    "TaskData",
    "TaskResult",
    "available_tasks",
    "get_task_class",
    "register_task",
]
