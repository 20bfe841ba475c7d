"""AlpacaEval-style task: pairwise win rate against a reference, with length control.

Each instruction is answered once (greedy) and compared with the reference output by a pairwise
judge, in one seeded random order per instruction (AlpacaEval's protocol) or in both orders,
combined by the judge mode's rule (`judges/llm.py`: probs averages P(candidate), AlpacaEval's
continuous preference; text makes a flip a tie). Both orders also give `swap_consistency` and,
in probs mode, `order_gap`. LLM judges call outputs identical to the reference a tie without
asking. Metrics follow AlpacaEval exactly (`metrics.head_to_head`).

The length-controlled win rate is AlpacaEval 2's `length_controlled_v1`, fitted on this run
alone with AlpacaEval's calibration rows (`length_control.py`, `calibration.py`), so a run's
number never depends on what else is in the store. It needs the calibration file and
AlpacaEval's own instructions; without either the run reports AlpacaEval's
`length_controlled_minimal` GLM (this model alone, no instruction difficulty, no calibration
rows) as `length_controlled_minimal_winrate`, says so in one warning line and records why in
its settings (so in its provenance). Either gets a bootstrap CI over instructions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.engine.requests import Request, Result, sha256_hex
from evalharness.errors import InputError
from evalharness.judges.annotations import same_output
from evalharness.judges.llm import order_gap
from evalharness.stats.intervals import BOOTSTRAP_REFIT, Intervals, mean

from ..base import JudgeItem, Outcome, Sample, Task, TaskData, TaskResult
from ..common import greedy_chat, json_sha256, pairwise_orders
from ..registry import register_task
from ..signatures import Responses, Stored, StoredSlots, Verdicts
from ..views import SampleView
from .calibration import Calibration, alpaca_eval_indexes, is_path, load_calibration
from .loader import load_items
from .metrics import head_to_head

TEMPLATE = "pairwise"
ORDERS = ("random", "both")
OPTIONS = ("data", "calibration", "orders", "max_new_tokens", "baseline")
#: The metric each GLM reports (`length_control.py`); the fallback never takes the LC name.
LC_METRIC = {
    "length_controlled_v1": "length_controlled_winrate",
    "length_controlled_minimal": "length_controlled_minimal_winrate",
}
NOT_ALPACA_EVAL = "the instructions are not all from AlpacaEval's evaluation set"


def sample_id(instruction: str) -> str:
    """Stable across files and subsets: derived from the instruction text itself."""
    return sha256_hex(instruction)[:16]


@register_task
class AlpacaEval(Task):
    name = "alpaca_eval"
    description = "AlpacaEval-style win rate and length-controlled win rate against a reference"

    headline = ("length_controlled_winrate", "win_rate")

    @classmethod
    def headline_metrics(cls, settings: Mapping[str, Any]) -> list[str]:
        """Without calibration the fallback heads the table, under its own name."""
        glm = settings.get("lc_glm")
        if glm in LC_METRIC:
            return [LC_METRIC[glm], "win_rate"]
        return list(cls.headline)

    @classmethod
    def warnings(cls, settings: Mapping[str, Any]) -> list[str]:
        if settings.get("lc_glm") != "length_controlled_minimal":
            return []
        hint = (
            ""
            if settings.get("lc_without_calibration") == NOT_ALPACA_EVAL
            else "; pass alpaca_eval.calibration=PATH to AlpacaEval's df_gamed.csv"
        )
        return [
            f"no length_controlled_winrate: {settings.get('lc_without_calibration')}; "
            "length_controlled_minimal_winrate is AlpacaEval's minimal GLM fitted on this model "
            f"alone, not the leaderboard's LC{hint}"
        ]

    @classmethod
    def outcomes(cls, scores: Mapping[str, Any], settings: Mapping[str, Any]) -> list[Outcome]:
        """win_rate is 100 x mean(preference - 1) over judged instructions (AlpacaEval's rule)."""
        preference = scores.get("preference")
        if preference is None or not 1.0 <= preference <= 2.0:
            return []
        value = 100.0 * (float(preference) - 1.0)
        return [
            Outcome("win_rate", value),
            Outcome(f"win_rate_{scores.get('dataset')}", value),
        ]

    @classmethod
    def present(
        cls, data: Stored, scores: Stored | None, responses: StoredSlots, verdicts: StoredSlots
    ) -> SampleView:
        view = super().present(data, scores, responses, verdicts)
        view.score = (scores or {}).get("preference")
        view.tags = {"dataset": str(data.get("dataset", ""))}
        return view

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        if "difficulty" in self.options:
            raise InputError(
                "alpaca_eval.difficulty is no longer an option: length_controlled_winrate takes "
                "instruction difficulty from AlpacaEval's df_gamed.csv "
                "(alpaca_eval.calibration=PATH)"
            )
        self.check_options(OPTIONS)
        self.orders = self.choice_option("orders", ORDERS, "random")
        self.max_new_tokens = self.int_option("max_new_tokens", 2048)
        self.calibration: Calibration | None = None
        #: sample id -> AlpacaEval index, when the data is AlpacaEval's (`calibration.py`).
        self.indexes: dict[str, int] = {}
        self.baseline: dict[str, dict[str, Result]] = {}

    # -- data ----------------------------------------------------------------------------
    def load(self, limit: int | None = None) -> TaskData:
        items, source = load_items(self.options.get("data", "hub"))
        data_hash = json_sha256(items)
        if limit is not None:
            items = items[:limit]
        samples = [Sample(id=sample_id(i["instruction"]), data=i) for i in items]
        lc = self._length_control([s.id for s in samples])
        settings = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "orders": self.orders,
            "judge_template": TEMPLATE,
            **lc,
        }
        return TaskData(
            samples=samples,
            data_hash=data_hash,
            source=source,
            settings=settings,
            extra_inputs={
                "lc_glm": lc["lc_glm"],
                "calibration_sha256": self.calibration.sha256 if self.calibration else None,
            },
        )

    def _length_control(self, ids: list[str]) -> dict[str, Any]:
        """Load the calibration when the data is AlpacaEval's; the settings that record it.

        A calibration file passed by path is read (and checked) whatever the data, so a broken
        file is an error even where it would not be used; the hub is only asked when it would.
        """
        option = self.options.get("calibration")
        calibration, reason = None, ""
        if is_path(option):
            calibration, reason = load_calibration(option)
        indexes = alpaca_eval_indexes(ids)
        if indexes is None:
            calibration, reason = None, NOT_ALPACA_EVAL
        elif calibration is None and not reason:
            calibration, reason = load_calibration(option)
        if calibration is None:
            return {"lc_glm": "length_controlled_minimal", "lc_without_calibration": reason}
        assert indexes is not None
        calibration.difficulty(indexes)  # a file without these items fails now, not later
        self.calibration = calibration
        self.indexes = dict(zip(ids, indexes, strict=True))
        return {"lc_glm": "length_controlled_v1", "lc_calibration": calibration.describe()}

    # -- model and judge work -------------------------------------------------------------
    def requests(self, sample: Sample, responses: Responses) -> dict[str, Request]:
        return {"output": greedy_chat(sample.data["instruction"], self.max_new_tokens)}

    def judge_protocols(self) -> tuple[str, ...]:
        return ("pairwise",)

    def planned_judge_items(self, sample: Sample) -> list[tuple[str, int]]:
        return [("pairwise", 2 if self.orders == "both" else 1)]

    def baseline_source(self) -> str | None:
        return self.options.get("baseline")

    def attach_baseline(self, responses: Mapping[str, Mapping[str, Result]]) -> None:
        self.baseline = {sid: dict(slots) for sid, slots in responses.items()}

    def reference(self, sample: Sample) -> str:
        if self.baseline:
            return self.baseline[sample.id]["output"].text  # type: ignore[union-attr]
        return sample.data["reference"]

    def judge_items(self, sample: Sample, responses: Responses) -> dict[str, JudgeItem]:
        fields = {
            "question_1": sample.data["instruction"],
            "answer_1": responses["output"].text,  # type: ignore[union-attr]
            "baseline_1": self.reference(sample),
            "turn": 1,
            "reference": None,
        }
        orders = pairwise_orders(self.orders, self.seed, sample.id)
        return {"verdict": JudgeItem("pairwise", TEMPLATE, fields, orders)}

    # -- scores ----------------------------------------------------------------------------
    def score(self, sample: Sample, responses: Responses, verdicts: Verdicts) -> dict[str, Any]:
        output = responses["output"].text  # type: ignore[union-attr]
        verdict = verdicts["verdict"]
        reference = self.reference(sample)
        return {
            "preference": verdict.get("preference"),
            "winner": verdict.get("winner"),
            "consistent": verdict.get("consistent"),
            "order_gap": order_gap(verdict),
            "failure": bool(verdict.get("failure")),
            # Why there is no preference, when the judge says (imported annotations do).
            "failure_reason": verdict.get("reason") if verdict.get("failure") else None,
            "model_length": len(output),
            "baseline_length": len(reference),
            # All true: the model is the baseline, whose LC is 50 by definition.
            "same_as_reference": same_output(output, reference),
            "dataset": sample.data["dataset"],
        }

    def _length_controlled(
        self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
        """This run's length-controlled win rate (`length_control.py`), metrics and CI."""
        # Imported here: scikit-learn takes seconds to import, and every command loads the tasks.
        from .length_control import ModelRows, length_controlled
        from .length_control import bootstrap_ci as lc_bootstrap_ci

        rows = ModelRows(
            preferences=[s["preference"] for s in scores],
            model_lengths=[s["model_length"] for s in scores],
            baseline_lengths=[s["baseline_length"] for s in scores],
            indexes=[self.indexes[s.id] for s in samples] if self.calibration else None,
            is_baseline=bool(scores) and all(s.get("same_as_reference") for s in scores),
        )
        fit = length_controlled(rows, self.calibration)
        if fit is None:
            return {}, {}
        name = LC_METRIC[fit.glm]
        metrics: dict[str, Any] = {name: fit.win_rate, "lc_glm": fit.glm}
        if self.calibration is not None:  # the minimal GLM predicts one constant: no spread
            metrics["lc_standard_error"] = fit.standard_error
        interval = lc_bootstrap_ci(rows, self.calibration, fit, seed=self.seed)
        return metrics, ({name: interval} if interval else {})

    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        preferences = [s["preference"] for s in scores]
        metrics: dict[str, Any] = head_to_head(preferences)
        metrics["avg_length"] = int(mean([s["model_length"] for s in scores]) or 0)
        intervals = Intervals(seed=self.seed)
        if metrics["n_total"]:
            lc_metrics, lc_ci = self._length_controlled(samples, scores)
            metrics.update(lc_metrics)
            for name, interval in lc_ci.items():
                intervals.add(name, interval, BOOTSTRAP_REFIT)
            # The win rate averages soft preferences (not 0/1 outcomes): a bootstrap of the mean.
            valid = [100.0 * (p - 1.0) for p in preferences if p is not None]
            intervals.mean("win_rate", valid, rate=False)
        both = [s["consistent"] for s in scores if s["consistent"] is not None]
        if both:
            metrics["swap_consistency"] = mean([float(c) for c in both])
        gaps = [s["order_gap"] for s in scores if s.get("order_gap") is not None]
        if gaps:  # probs verdicts in both orders; scores stored before it lack the key
            metrics["order_gap"] = mean(gaps)
        for dataset in sorted({s["dataset"] for s in scores}):
            subset = [s["preference"] for s in scores if s["dataset"] == dataset]
            metrics[f"win_rate_{dataset}"] = head_to_head(subset)["win_rate"]
        counts = {"judged": metrics["n_total"], "both_orders": len(both)}
        reasons = Counter(s.get("failure_reason") for s in scores if s["failure"])
        counts.update({f"failures_{r}": n for r, n in sorted(reasons.items()) if r})
        return TaskResult(
            metrics=metrics,
            failures=sum(s["failure"] for s in scores),
            ci=intervals.ci,
            counts=counts,
            ci_method=intervals.method,
        )
