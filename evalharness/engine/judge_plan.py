"""Before a run starts: which judge grades each task, and how many calls judging will cost.

Judges are chosen per task (`--judge`, else the task's own default, else the model itself) and
built once per distinct spec, so tasks that share a judge share its verdict cache and its
connection. The cost is said up front, before any model call, because judge calls are the part
of a run that costs money: the user sees the estimate and whether `--max-judge-calls` covers it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from evalharness.backends import Backend
from evalharness.engine.judging import JudgeStats
from evalharness.engine.run_types import RunSpec
from evalharness.tasks.base import Task, TaskData

if TYPE_CHECKING:  # for annotations only: `build_judges` imports the judges lazily
    from evalharness.judges.base import Judge


def build_judges(
    spec: RunSpec, tasks: Sequence[Task], backend: Backend, use_judge: Judge | None = None
) -> dict[str, Any]:
    """task name -> judge. `--judge` when given, else the task's own default (e.g. rules
    for refusal), else the evaluated model itself; equal specs share one judge. `use_judge`,
    when given, stands in for every judge spec (an importer's prebuilt judge)."""
    from evalharness.judges.factory import build_judge

    built: dict[str, Any] = {}
    judges = {}
    for task in tasks:
        if not task.needs_judge:
            continue
        judge_spec = spec.judge or task.default_judge or "self"
        if use_judge is not None:
            built.setdefault(judge_spec, use_judge)
        if judge_spec not in built:
            built[judge_spec] = build_judge(
                judge_spec,
                model_spec=spec.model,
                model_backend=backend,
                mode=spec.judge_mode,
                base_url=spec.judge_base_url,
                api_key_env=spec.judge_api_key_env,
                max_new_tokens=spec.judge_max_new_tokens,
                concurrency=spec.judge_concurrency,
                timeout_s=spec.judge_timeout_s,
                http_retries=spec.judge_http_retries,
                retries=spec.judge_retries,
                device=spec.judge_device or spec.model.device,
            )
        for protocol in task.judge_protocols():
            built[judge_spec].check_protocol(protocol)
        judges[task.name] = built[judge_spec]
    return judges


def estimate_judge_calls(
    tasks: Sequence[Task],
    loaded: dict[str, TaskData],
    judges: dict[str, Any],
    budget: int | None,
    stats: JudgeStats,
    notify: Callable[[str], None],
) -> None:
    """Judge calls this run needs, said before starting (before the verdict cache, which
    makes cached items free): the calls when every verdict parses at once, and the most
    there can be when each unparseable one is asked again `judge.retries` times. Each
    judge says what one item costs (`Judge.calls_per_item`): an LLM judge in probs mode
    scores every rating 1-10, ten calls for one verdict. Both numbers go into `stats`."""
    items = first = most = 0
    for task in tasks:
        judge = judges.get(task.name)
        if judge is None:
            continue
        for sample in loaded[task.name].samples:
            for protocol, n_orders in task.planned_judge_items(sample):
                calls = judge.calls_per_item(protocol, n_orders)
                items += 1
                first += calls
                most += calls * (1 + judge.retries)
    stats.estimated_calls = first
    stats.max_calls = most
    if most > first:
        notify(
            f"judging {items} items needs {first} judge calls if every verdict parses, at "
            f"most {most} with parse retries (cached verdicts are free)"
        )
    elif first:
        notify(
            f"judging {items} items needs at most {first} judge calls (cached verdicts are free)"
        )
    if budget is not None and first > budget:
        notify(
            f"--max-judge-calls {budget} is below that: items past the budget stay "
            "unjudged and a re-run continues where this one stops"
        )
    elif budget is not None and most > budget:
        notify(
            f"--max-judge-calls {budget} covers every first attempt, not every parse retry: "
            "an item whose retry would pass it stays unjudged until a re-run"
        )
