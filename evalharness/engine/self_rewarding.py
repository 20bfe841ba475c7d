"""`evalharness pipeline` with a `rounds:` section: iterative, self-rewarding DPO in one command.

Each round (Yuan et al., 2024, "Self-Rewarding Language Models"; iterative DPO in general):
1. the current model samples `samples` answers to every prompt (`round_steps`, seeded);
2. a judge rates each answer: `self` (the current model as an LLM judge, the paper's
   LLM-as-a-judge step, with MT-Bench's 1-10 prompt instead of the paper's additive 5-point
   one), another LLM judge, `rm:` or a rule judge with `label_ratings`;
3. per prompt the best-rated answer is paired against the worst-rated one (ties and prompts
   without two ratings are skipped and counted);
4. `train:`'s pairwise method trains from the current model on those pairs, with the round's
   starting model as the reference (the default reference of every run);
5. the result is evaluated with `evaluate:` (a stored run per round: its model is
   `hf:OUT/round-N/model`, so `runs`, `report` and `compare` tell the rounds apart);
6. `gate:` compares it with the previous round's run and with the base's; the loop stops at
   the first round that fails a gate (exit 1), and the last round that passed is the result.

```yaml
train: {method: dpo, model: hf:base, out: runs/self-reward, max_steps: 50, loss_args: {beta: 0.1}}
evaluate: {tasks: [mt_bench], limit: 16}
gate: [{metric: mt_bench.score, max_drop: 0.2}]
rounds: {count: 3, prompts: prompts.jsonl, samples: 4, judge: self}
```

The rounds write the data (no `train.data`) and set the reference (no `train.reference`).
Resuming: every step writes its output into `OUT/round-N/` whole or not at all, and
`OUT/rounds.json` records which config and prompts made them; rerunning the same config skips
every finished step (a finished round's evaluation is a cached run, its gate re-read from the
store), so an interrupted pipeline goes on where it stopped. Another config on the same `out`
is refused rather than mixed with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evalharness.engine import pipeline_steps
from evalharness.engine.round_steps import (
    RatingJudge,
    Sampling,
    build_pairs,
    generate_samples,
    read_jsonl_rows,
    write_json,
    write_jsonl,
)
from evalharness.errors import InputError
from evalharness.formats.records import YamlLines
from evalharness.store.paths import default_store_path

#: `rounds:` keys: the types they take, how an error names those, and defaults (None: none).
ROUNDS_KEYS: dict[str, tuple[tuple[type, ...], str, Any]] = {
    "count": ((int,), "a whole number", None),
    "prompts": ((str,), "a path", None),
    "samples": ((int,), "a whole number", 4),
    "judge": ((str,), "a judge spec", "self"),
    "judge_mode": ((str,), "a string", "auto"),
    "label_ratings": ((dict,), "a mapping of label to number", None),
    "temperature": ((float, int), "a number", 0.7),
    "max_new_tokens": ((int,), "a whole number", 256),
    "seed": ((int,), "a whole number", 0),
    "limit": ((int,), "a whole number", None),
}
#: Rule judges whose labels have an obvious worth; any other rule judge needs `label_ratings`.
DEFAULT_LABEL_RATINGS = {"regex": {"match": 1.0, "no_match": 0.0}}


@dataclass(frozen=True)
class RoundsConfig:
    count: int
    prompts: str
    judge: str
    judge_mode: str
    label_ratings: dict[str, float] | None
    sampling: Sampling
    limit: int | None


def read_rounds(section: Any, lines: YamlLines) -> RoundsConfig:
    """The `rounds:` section, every key checked (one line naming the file, line and field)."""
    if not isinstance(section, dict):
        raise InputError(f"{lines.where('rounds')}: section 'rounds' must be a mapping")
    values: dict[str, Any] = {}
    for key, value in section.items():
        where = f"{lines.where('rounds', key)}: field 'rounds.{key}'"
        if key not in ROUNDS_KEYS:
            raise InputError(
                f"{lines.where('rounds', key)}: unknown key rounds.{key}; "
                f"known: {', '.join(ROUNDS_KEYS)}"
            )
        kinds, shown, default = ROUNDS_KEYS[key]
        if value is None and default is None and key in ("label_ratings", "limit"):
            continue  # written out as null: the default
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise InputError(f"{where} must be {shown}, not {value!r}")
        values[key] = value
    for key, (_, _, default) in ROUNDS_KEYS.items():
        if key not in values:
            if default is None and key in ("count", "prompts"):
                raise InputError(f"{lines.where('rounds')}: field 'rounds.{key}' is missing")
            values[key] = default
    for key, least in (("count", 1), ("samples", 2), ("max_new_tokens", 1), ("limit", 1)):
        if values[key] is not None and values[key] < least:
            raise InputError(
                f"{lines.where('rounds', key)}: field 'rounds.{key}' must be at least {least}, "
                f"not {values[key]}"
            )
    if values["temperature"] <= 0:
        raise InputError(
            f"{lines.where('rounds', 'temperature')}: field 'rounds.temperature' must be above "
            f"0 (greedy decoding gives {values['samples']} equal answers, so no pairs)"
        )
    ratings = values["label_ratings"]
    if ratings is not None:
        ratings = _label_ratings(ratings, lines)
    sampling = Sampling(
        values["samples"], float(values["temperature"]), values["max_new_tokens"], values["seed"]
    )
    return RoundsConfig(
        count=values["count"],
        prompts=values["prompts"],
        judge=values["judge"],
        judge_mode=values["judge_mode"],
        label_ratings=ratings,
        sampling=sampling,
        limit=values["limit"],
    )


def _label_ratings(mapping: dict[Any, Any], lines: YamlLines) -> dict[str, float]:
    ratings = {}
    for label, value in mapping.items():
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise InputError(
                f"{lines.where('rounds', 'label_ratings', label)}: field "
                f"'rounds.label_ratings.{label}' must be a number, not {value!r}"
            )
        ratings[str(label)] = float(value)
    return ratings


def rule_ratings(rounds: RoundsConfig, lines: YamlLines) -> dict[str, float] | None:
    """What each label of a rule judge is worth (None for judges that rate): checked against
    every label the rules can give, before anything loads."""
    from evalharness.judges.rules import ALIASES, KINDS, RuleJudge

    where = lines.where("rounds", "judge")
    kind = ALIASES.get(rounds.judge, rounds.judge).partition(":")[0]
    if kind in ("clf", "annotations"):
        raise InputError(
            f"{where}: field 'rounds.judge': {kind}: judges cannot rate answers; use self, an "
            "LLM judge spec, rm:, or a rule judge with rounds.label_ratings"
        )
    try:
        judge = RuleJudge.from_spec(rounds.judge) if kind in KINDS else None
    except InputError as exc:
        raise InputError(f"{where}: field 'rounds.judge': {exc}") from None
    if judge is None:
        if rounds.label_ratings is not None:
            raise InputError(
                f"{lines.where('rounds', 'label_ratings')}: rounds.label_ratings is for rule "
                f"judges; {rounds.judge} rates answers itself"
            )
        return None
    ratings = rounds.label_ratings or DEFAULT_LABEL_RATINGS.get(kind)
    labels = judge.labels("classify")
    missing = [label for label in labels if label not in (ratings or {})]
    if missing:
        raise InputError(
            f"{lines.where('rounds', 'label_ratings')}: rule judge {rounds.judge} gives labels "
            f"{', '.join(labels)}; rounds.label_ratings must rate {', '.join(missing)}"
        )
    return ratings


def check_train(path: Path, config: dict[str, Any], lines: YamlLines) -> tuple[Any, Any]:
    """`train:` as every round trains: a pairwise method, no data or reference of its own."""
    from evalharness.engine.training import check_method
    from evalharness.trainers.config import TrainConfig

    def locate(*keys: str) -> str:
        return lines.where("train", *keys)

    for key, why in (("data", "each round's pairs"), ("reference", "each round's start model")):
        if key in config["train"]:
            raise InputError(
                f"{locate(key)}: field 'train.{key}': with rounds, {why} is the {key}; leave it out"
            )
    mapping = {**config["train"], "data": "rounds"}
    train_config = TrainConfig.from_mapping(mapping, str(path), locate=locate, section="train.")
    method = check_method(train_config, locate, "train.")
    if method.data_format != "pairwise":
        raise InputError(
            f"{locate('method')}: field 'train.method': rounds train on preference pairs, and "
            f"{method.name} takes {method.data_format} data; use a pairwise method (dpo, ipo, ...)"
        )
    return train_config, method


def config_fingerprint(config: dict[str, Any], prompts: Path) -> dict[str, Any]:
    """What the rounds' files depend on: the train and rounds sections, `evaluate.dtype` (the
    dtype the rounds sample and self-judge in) and the prompts' bytes.

    Evaluation and gates are re-read from the store, so they may change between attempts, and
    so may `rounds.count`: a finished pipeline given a larger count goes on with more rounds.
    """
    from evalharness.engine.requests import canonical_json, sha256_hex
    from evalharness.store.hashing import sha256_file

    rounds = {key: value for key, value in config["rounds"].items() if key != "count"}
    sections = {
        "train": config["train"],
        "rounds": rounds,
        "evaluate.dtype": config["evaluate"].get("dtype") or "auto",
    }
    return {
        "config_sha256": sha256_hex(canonical_json(sections)),
        "prompts_sha256": sha256_file(prompts),
    }


def claim_output(out: Path, fingerprint: dict[str, Any], where: str) -> None:
    """Make `out` this config's folder, or check it already is (a resume)."""
    import json

    marker = out / "rounds.json"
    if marker.exists():
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded != fingerprint:
            raise InputError(
                f"{where}: {out} holds rounds made by another train/rounds config, "
                "evaluate.dtype or prompts file; give train.out a new folder (or remove it to "
                "start over)"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{where}: {out} is not empty and holds no rounds; give a new train.out")
    write_json(marker, fingerprint)


class Rounds:
    """One pipeline's rounds: the steps of each, skipped where their output is there already.
    `engine.pipeline.run_pipeline` runs it for a config with `rounds:`."""

    def __init__(self, path: Path, config: dict[str, Any], lines: YamlLines, progress: bool):
        self.path, self.config, self.progress = path, config, progress
        self.gates = pipeline_steps.parse_gates(path, config.get("gate"), lines)
        self.rounds = read_rounds(config.get("rounds"), lines)
        self.train_config, self.method = check_train(path, config, lines)
        self.evaluate_config = config["evaluate"]
        pipeline_steps.check_evaluate(path, self.evaluate_config, lines)
        self.label_ratings = rule_ratings(self.rounds, lines)
        self._check_judge_spec(lines)
        from evalharness.trainers.data import load_rows

        prompts_path = Path(self.rounds.prompts)
        if not prompts_path.is_file():
            raise InputError(
                f"{lines.where('rounds', 'prompts')}: field 'rounds.prompts': {prompts_path}: "
                "no such file"
            )
        rows = load_rows(prompts_path, "prompt", limit=self.rounds.limit)
        self.prompts = [row["prompt"] for row in rows]
        self.out = Path(self.train_config.out)
        claim_output(self.out, config_fingerprint(config, prompts_path), lines.where("train"))
        self.store = Path(self.evaluate_config.get("store") or default_store_path())

    def _check_judge_spec(self, lines: YamlLines) -> None:
        """A judge model spec or mode that cannot work fails now, not after a round's sampling."""
        from evalharness.backends.spec import parse_model_spec
        from evalharness.judges.llm import MODES

        where = lines.where("rounds", "judge")
        if self.rounds.judge_mode not in ("auto", *MODES):
            raise InputError(
                f"{lines.where('rounds', 'judge_mode')}: field 'rounds.judge_mode' must be one of "
                f"auto, {', '.join(MODES)}, not {self.rounds.judge_mode!r}"
            )
        if self.label_ratings is None and self.rounds.judge != "self":
            try:
                parse_model_spec(self.rounds.judge)
            except InputError as exc:
                raise InputError(f"{where}: field 'rounds.judge': {exc}") from None

    # -- one round's steps -------------------------------------------------------------------
    def model_spec(self, model: str) -> Any:
        from evalharness.backends.spec import parse_model_spec

        return parse_model_spec(
            model,
            dtype=str(self.evaluate_config.get("dtype") or "auto"),
            device=self.evaluate_config.get("device"),
            device_map=self.evaluate_config.get("device_map"),
        )

    def sample_and_judge(self, model: str, folder: Path) -> None:
        """Steps 1-2: `generations.jsonl` (the answers), then `judged.jsonl` (with ratings).

        The model stays loaded for judging only when it is the judge: another judge model then
        has the accelerator's memory to itself, and a resumed round that only judges loads no
        policy at all.
        """
        from evalharness.backends import load_backend
        from evalharness.judges.factory import build_judge

        generations, judged = folder / "generations.jsonl", folder / "judged.jsonl"
        if judged.exists():
            return
        spec = self.model_spec(model)
        judges_itself = self.rounds.judge in ("self", spec.raw)
        backend = load_backend(spec) if judges_itself or not generations.exists() else None
        judge = None
        try:
            if not generations.exists():
                assert backend is not None
                write_jsonl(
                    generations, generate_samples(backend, self.prompts, self.rounds.sampling)
                )
            if backend is not None and not judges_itself:
                backend.close()
                backend = None
            rows = read_jsonl_rows(generations)
            judge = build_judge(
                self.rounds.judge,
                model_spec=spec,
                model_backend=backend,
                mode=self.rounds.judge_mode,
                device=self.evaluate_config.get("device"),
            )
            write_jsonl(judged, RatingJudge(judge, self.label_ratings).judge_rows(rows))
        finally:
            if judge is not None and judge.backend not in (None, backend):
                judge.backend.close()
            if backend is not None:
                backend.close()

    def pairs(self, folder: Path) -> dict[str, int]:
        """Step 3: `pairs.jsonl` from the ratings, and their counts (`pairs.json`)."""
        counts_path = folder / "pairs.json"
        if not counts_path.exists():
            pairs, counts = build_pairs(read_jsonl_rows(folder / "judged.jsonl"))
            write_jsonl(folder / "pairs.jsonl", pairs)
            write_json(counts_path, counts)
        return _read_json(counts_path)

    def train(self, model: str, folder: Path) -> dict[str, Any]:
        """Step 4: the pairwise method from `model`, which is also the reference."""
        from evalharness.engine.training import run_training

        trained = folder / "trained.json"
        if not trained.exists():
            config = replace(
                self.train_config,
                model=model,
                data=str(folder / "pairs.jsonl"),
                out=str(folder / "model"),
                reference=None,
            )
            summary = run_training(self.method, config, progress=self.progress)
            write_json(trained, {"out": str(summary.out), "steps": summary.steps})
        return _read_json(trained)

    def gate(self, role: str, earlier: dict[str, Any], result: dict[str, Any]) -> list[dict]:
        """Step 6: the gates of `result` against an earlier run (`against` says which)."""
        problems = [
            pipeline_steps.evaluation_problem(role, earlier),
            pipeline_steps.evaluation_problem("tuned", result),
        ]
        if any(problems):
            reason = "not compared: " + "; ".join(p for p in problems if p)
            checks = pipeline_steps.failed_gates(self.gates, reason)
        else:
            checks = pipeline_steps.check_gates(
                self.store, earlier["run_id"], result["run_id"], self.gates
            )
        return [{**check, "against": role} for check in checks]

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        base_model = self.train_config.model
        base = pipeline_steps.evaluate(base_model, self.evaluate_config, str(self.path))
        runs: list[tuple[str, dict[str, Any]]] = [("base", base)]
        model, reports, passed, stopped = base_model, [], True, None
        for number in range(1, self.rounds.count + 1):
            folder = self.out / f"round-{number}"
            self.sample_and_judge(model, folder)
            counts = self.pairs(folder)
            if counts["pairs"] == 0:
                stopped = (
                    f"round {number}: no preference pairs from {counts['prompts']} prompts "
                    f"({counts['ties']} all tied, {counts['unrated']} with fewer than two "
                    "ratings): raise rounds.samples or use a judge that tells the answers apart"
                )
                passed = False
                break
            trained = self.train(model, folder)
            tuned_model = f"hf:{(folder / 'model').resolve()}"
            result = pipeline_steps.evaluate(tuned_model, self.evaluate_config, str(self.path))
            previous_role, previous = runs[-1]
            checks = self.gate(previous_role, previous, result)
            if number > 1:
                checks += self.gate("base", base, result)
            report = {
                "round": number,
                "start_model": model,
                "model": tuned_model,
                "folder": str(folder),
                "pairs": counts,
                "trained": trained,
                "run": result["run_id"],
                "gates": checks,
                "warnings": [
                    f"round {number} run {result['run_id']}: {w}"
                    for w in result.get("warnings", [])
                ],
                "passed": all(check["passed"] for check in checks),
            }
            write_json(folder / "round.json", report)
            reports.append(report)
            if not report["passed"]:
                failed = sorted(
                    {f"{c['metric']} (vs {c['against']})" for c in checks if not c["passed"]}
                )
                stopped = f"round {number} failed its gate: {', '.join(failed)}"
                passed = False
                break
            runs.append((f"round {number}", result))
            model = tuned_model
        return {
            "base_run": base["run_id"],
            "rounds": reports,
            "final_model": model,
            "stopped": stopped,
            "warnings": [f"base run {base['run_id']}: {w}" for w in base.get("warnings", [])]
            + [w for report in reports for w in report["warnings"]],
            "passed": passed,
        }


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8"))
