"""AlpacaEval-style task: pairwise win rate against a reference, with length control.

Each instruction is answered once (greedy) and compared with the reference output by a pairwise
judge, in one seeded random order per instruction (AlpacaEval's protocol) or in both orders,
combined by the judge mode's rule (`judges/llm.py`: probs averages P(candidate), AlpacaEval's
continuous preference; text makes a flip a tie). Both orders also give `swap_consistency` and,
in probs mode, `order_gap`. LLM judges call outputs identical to the reference a tie without
asking. Metrics follow AlpacaEval exactly (`metrics.head_to_head`); the length-controlled win
rate is fitted per run, and refitted jointly over every stored run of the same judge, data,
baseline and length-control variant, because length bias is a property of the judge
(`metrics.length_controlled`). Each refit of a stored run is recorded in its `pool_history`
(`evalharness.pool_history`). Its 95% CI is a bootstrap over instructions that refits the GLM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.judges.llm import order_gap
from evalharness.requests import (
    GenerateRequest,
    Message,
    Request,
    Result,
    SamplingParams,
    canonical_json,
    sha256_hex,
)
from evalharness.stats import bootstrap_ci, mean

from ..base import (
    JudgeItem,
    Outcome,
    PooledResult,
    Sample,
    SampleView,
    Task,
    TaskData,
    TaskResult,
)
from ..registry import register_task
from .loader import load_difficulty, load_items
from .metrics import LC_RESAMPLES, RunPreferences, head_to_head, length_controlled

TEMPLATE = "pairwise"
ORDERS = ("random", "both")
OPTIONS = ("data", "difficulty", "orders", "max_new_tokens", "baseline")
#: Bootstrap seed of the joint fit's CIs: fixed, so that a joint fit depends only on its
#: members' scores (its fit id), not on which member's run happened to trigger it.
POOL_SEED = 0


def sample_id(instruction: str) -> str:
    """Stable across files and subsets: derived from the instruction text itself."""
    return sha256_hex(instruction)[:16]


@register_task
class AlpacaEval(Task):
    name = "alpaca_eval"
    description = "AlpacaEval-style win rate and length-controlled win rate against a reference"
    pooled = True

    headline = ("length_controlled_winrate", "win_rate")

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
        cls,
        data: Mapping[str, Any],
        scores: Mapping[str, Any] | None,
        responses: Mapping[str, Mapping[str, Any]],
        verdicts: Mapping[str, Mapping[str, Any]],
    ) -> SampleView:
        view = super().present(data, scores, responses, verdicts)
        view.score = (scores or {}).get("preference")
        view.tags = {"dataset": str(data.get("dataset", ""))}
        return view

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.check_options(OPTIONS)
        self.orders = self.options.get("orders", "random")
        if self.orders not in ORDERS:
            raise InputError(f"alpaca_eval.orders {self.orders!r} is not one of random, both")
        self.max_new_tokens = self.int_option("max_new_tokens", 2048)
        self.difficulty: dict[str, float] | None = None
        self.baseline: dict[str, dict[str, Result]] = {}

    # -- data ----------------------------------------------------------------------------
    def load(self, limit: int | None = None) -> TaskData:
        items, source = load_items(self.options.get("data", "hub"))
        data_hash = sha256_hex(canonical_json(items))
        if self.options.get("difficulty"):
            by_instruction = load_difficulty(Path(self.options["difficulty"]), items)
            missing = [i for i in items if i["instruction"] not in by_instruction]
            if missing:
                raise InputError(
                    f"{self.options['difficulty']}: no difficulty for "
                    f"{missing[0]['instruction'][:50]!r} ({len(missing)} missing)"
                )
            self.difficulty = {
                sample_id(i["instruction"]): by_instruction[i["instruction"]] for i in items
            }
        if limit is not None:
            items = items[:limit]
        samples = [Sample(id=sample_id(i["instruction"]), data=i) for i in items]
        settings = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "orders": self.orders,
            "judge_template": TEMPLATE,
            "length_control": "full" if self.difficulty else "minimal",
        }
        return TaskData(samples=samples, data_hash=data_hash, source=source, settings=settings)

    # -- model and judge work -------------------------------------------------------------
    def requests(self, sample: Sample, responses: Mapping[str, Result]) -> dict[str, Request]:
        sampling = SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens)
        return {"output": GenerateRequest((Message("user", sample.data["instruction"]),), sampling)}

    def judge_protocols(self) -> tuple[str, ...]:
        return ("pairwise",)

    def planned_judge_items(self, sample: Sample) -> list[tuple[str, int]]:
        return [("pairwise", 2 if self.orders == "both" else 1)]

    def pool_fields(self) -> dict[str, Any]:
        """Runs fitted with another length-control variant, or other difficulty values, fit
        another model and never share a fit (the judge, data and baseline are the engine's)."""
        return {
            "lc_variant": "full" if self.difficulty else "minimal",
            "difficulty": sha256_hex(canonical_json(self.difficulty)) if self.difficulty else None,
        }

    def baseline_source(self) -> str | None:
        return self.options.get("baseline")

    def attach_baseline(self, responses: Mapping[str, Mapping[str, Result]]) -> None:
        self.baseline = {sid: dict(slots) for sid, slots in responses.items()}

    def reference(self, sample: Sample) -> str:
        if self.baseline:
            return self.baseline[sample.id]["output"].text  # type: ignore[union-attr]
        return sample.data["reference"]

    def judge_items(self, sample: Sample, responses: Mapping[str, Result]) -> dict[str, JudgeItem]:
        fields = {
            "question_1": sample.data["instruction"],
            "answer_1": responses["output"].text,  # type: ignore[union-attr]
            "baseline_1": self.reference(sample),
            "turn": 1,
            "reference": None,
        }
        if self.orders == "both":
            orders: tuple[bool, ...] = (True, False)
        else:
            coin = int(sha256_hex(f"{self.seed}:{sample.id}")[:8], 16) % 2 == 0
            orders = (coin,)
        return {"verdict": JudgeItem("pairwise", TEMPLATE, fields, orders)}

    # -- scores ----------------------------------------------------------------------------
    def score(
        self,
        sample: Sample,
        responses: Mapping[str, Result],
        verdicts: Mapping[str, dict[str, Any]],
    ) -> dict[str, Any]:
        output = responses["output"].text  # type: ignore[union-attr]
        verdict = verdicts["verdict"]
        return {
            "preference": verdict.get("preference"),
            "winner": verdict.get("winner"),
            "consistent": verdict.get("consistent"),
            "order_gap": order_gap(verdict),
            "failure": bool(verdict.get("failure")),
            # Why there is no preference, when the judge says (imported annotations do).
            "failure_reason": verdict.get("reason") if verdict.get("failure") else None,
            "model_length": len(output),
            "baseline_length": len(self.reference(sample)),
            "dataset": sample.data["dataset"],
        }

    def _run_preferences(
        self, ids: Sequence[str], scores: Sequence[dict[str, Any] | None]
    ) -> RunPreferences:
        kept = [(i, s) for i, s in zip(ids, scores, strict=True) if s is not None]
        return RunPreferences(
            item_ids=[i for i, _ in kept],
            preferences=[s["preference"] for _, s in kept],
            model_lengths=[s["model_length"] for _, s in kept],
            baseline_lengths=[s["baseline_length"] for _, s in kept],
        )

    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        preferences = [s["preference"] for s in scores]
        metrics: dict[str, Any] = head_to_head(preferences)
        metrics["avg_length"] = int(mean([s["model_length"] for s in scores]) or 0)
        runs = {"run": self._run_preferences([s.id for s in samples], scores)}
        ci: dict[str, tuple[float, float]] = {}
        if metrics["n_total"]:
            fit = length_controlled(runs, self.difficulty, n_resamples=LC_RESAMPLES, seed=self.seed)
            metrics["length_controlled_winrate"] = fit.win_rates["run"]
            metrics["lc_variant"] = fit.variant
            metrics["lc_fit"] = "single_run"
            if "run" in fit.ci:
                ci["length_controlled_winrate"] = fit.ci["run"]
            valid = [100.0 * (p - 1.0) for p in preferences if p is not None]
            interval = bootstrap_ci(valid, seed=self.seed)
            if interval is not None:
                ci["win_rate"] = interval
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
            metrics=metrics, failures=sum(s["failure"] for s in scores), ci=ci, counts=counts
        )

    def pooled_metrics(
        self, runs: Mapping[str, Sequence[tuple[str, dict[str, Any] | None]]]
    ) -> dict[str, PooledResult]:
        """One length coefficient for the judge, fitted over all its runs in the pool.

        The pool (the engine's key) holds runs of one judge on the same data against the same
        baseline with the same variant and difficulty (`pool_fields`), so one GLM fits them
        all. Each run's CI comes from the joint bootstrap: instructions resampled once for
        all runs and the joint GLM refitted on each resample (`metrics._bootstrap`), seeded
        with `POOL_SEED`; it costs about a second for ten runs of 805 instructions.
        """
        usable = {
            run_id: rows
            for run_id, rows in runs.items()
            if any(s is not None and s["preference"] is not None for _, s in rows)
        }
        if len(usable) < 2:
            return {}
        preferences = {
            run_id: self._run_preferences([i for i, _ in rows], [s for _, s in rows])
            for run_id, rows in usable.items()
        }
        fit = length_controlled(
            preferences, self.difficulty, n_resamples=LC_RESAMPLES, seed=POOL_SEED
        )
        return {
            run_id: PooledResult(
                metrics={
                    "length_controlled_winrate": fit.win_rates[run_id],
                    "lc_variant": fit.variant,
                    "lc_fit": f"joint over {fit.n_runs} runs of this judge",
                    "lc_length_coef": fit.length_coef,
                },
                ci=({"length_controlled_winrate": fit.ci[run_id]} if run_id in fit.ci else {}),
            )
            for run_id in usable
        }
