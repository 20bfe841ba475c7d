"""The Python API: `evaluate`, `compare`, `Results.to_pandas`, and `EvalCallback` in a TRL run.

Each is held to the CLI on the same inputs: the same run id and numbers for a spec string, the
same numbers for a model in memory as for its saved checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli

import evalharness
from evalharness.errors import InputError

#: A judged task, small and cheap on the tiny model: it judges itself (probabilities mode), so
#: its ratings are real numbers that move when the weights do.
TASK = "mt_bench"
OPTIONS = {"mt_bench": {"data": "builtin", "max_new_tokens": "8"}}
LIMIT = 2


def cli_run(capsys: pytest.CaptureFixture[str], model: str, store: Path) -> dict[str, Any]:
    capsys.readouterr()  # what ran before (a trainer's log lines) is not the command's output
    code, stdout, _ = run_cli(
        capsys,
        "run",
        "--model",
        model,
        "--tasks",
        TASK,
        "--task-arg",
        "mt_bench.data=builtin",
        "--task-arg",
        "mt_bench.max_new_tokens=8",
        "--limit",
        str(LIMIT),
        "--store",
        str(store),
        "--json",
    )
    assert code == 0
    return json.loads(stdout)


def test_evaluate_is_the_cli_run(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    results = evalharness.evaluate(
        f"hf:{tiny_model_dir}", [TASK], limit=LIMIT, store=store, task_options=OPTIONS
    )
    assert results.status == "complete"
    assert results.raw["calls_made"]["model"] > 0
    cli = cli_run(capsys, f"hf:{tiny_model_dir}", store)
    assert cli["run_id"] == results.run_id
    assert cli["calls_made"] == {"model": 0, "judge": 0}  # answered from the API run's cache
    assert cli["tasks"][TASK]["metrics"] == results.metrics[TASK]
    frames = results.to_pandas()
    row = frames.metrics.set_index(["task", "metric"]).loc[(TASK, "score")]
    assert row["value"] == results.metrics[TASK]["score"]
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert len(frames.samples) == LIMIT
    assert {"task", "sample_id", "turn1", "turn2"} <= set(frames.samples.columns)
    comparison = evalharness.compare(results, cli["run_id"])
    assert comparison.passed and comparison.to_json()["tasks"]


def test_a_model_in_memory_scores_as_its_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    store = tmp_path / "runs.sqlite"
    results = evalharness.evaluate(
        model, TASK, tokenizer=tokenizer, limit=LIMIT, store=store, task_options=OPTIONS
    )
    assert model.training  # given back as it came
    cli = cli_run(capsys, f"hf:{tiny_model_dir}", store)
    assert cli["run_id"] != results.run_id  # another identity: the weights in memory
    for metric, value in cli["tasks"][TASK]["metrics"].items():
        assert results.metrics[TASK][metric] == pytest.approx(value, abs=1e-4), metric
    with pytest.raises(InputError, match="tokenizer"):
        evalharness.evaluate(model, TASK, store=store)
    with pytest.raises(InputError, match="not in tasks"):
        evalharness.evaluate(model, TASK, tokenizer=tokenizer, task_options={"other": {}})


def _sft_trainer(model_dir: Path, output_dir: Path) -> Any:
    """10 SFT steps on TRL's conversational format, a checkpoint and a log every 5 steps."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Name a river number {i}."},
                {"role": "assistant", "content": "The river is long and the model answers."},
            ]
        }
        for i in range(20)
    ]
    config = trl.SFTConfig(
        output_dir=str(output_dir),
        max_steps=10,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        save_steps=5,
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        seed=0,
        save_only_model=True,
    )
    return trl.SFTTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )


def test_eval_callback_logs_task_metrics_in_a_trl_sft_run(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Metrics at steps 5 and 10 are logged and equal what the CLI gives for the checkpoints the
    trainer saved at those steps; TRL's own logs (loss, token accuracy, entropy, ...) at those
    steps are the ones a run without the callback logs."""
    without = _sft_trainer(tiny_model_dir, tmp_path / "without")
    without.train()
    expected = _loss_logs(without.state.log_history)
    assert [entry["step"] for entry in expected] == [5, 10]

    trainer = _sft_trainer(tiny_model_dir, tmp_path / "sft")
    store = tmp_path / "runs.sqlite"
    callback = evalharness.EvalCallback(
        trainer, tasks=[TASK], every_n_steps=5, limit=LIMIT, store=store, task_options=OPTIONS
    )
    trainer.add_callback(callback)
    trainer.train()

    assert _loss_logs(trainer.state.log_history) == expected
    logged = [e for e in trainer.state.log_history if "evalharness/mt_bench/score" in e]
    assert [e["step"] for e in logged] == [5, 10]
    assert [step for step, _ in callback.results] == [5, 10]
    assert logged[0]["evalharness/mt_bench/score"] != logged[1]["evalharness/mt_bench/score"]
    for entry in logged:
        checkpoint = tmp_path / "sft" / f"checkpoint-{entry['step']}"
        cli = cli_run(capsys, f"hf:{checkpoint}", store)
        want = cli["tasks"][TASK]["metrics"]["score"]
        assert entry["evalharness/mt_bench/score"] == pytest.approx(want, abs=1e-4)


def _loss_logs(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trainer's own per-step logs (loss, grad_norm, ...), without the evalharness metrics
    and without the end-of-training summary (its runtime differs from run to run)."""
    return [
        entry
        for entry in log_history
        if "loss" in entry and not any(key.startswith("evalharness/") for key in entry)
    ]


def _plain_trainer(model_dir: Path, output_dir: Path, logging_steps: int) -> Any:
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    texts = [
        f"Name a river number {i}. The river is long and the model answers." for i in range(24)
    ]
    data = Dataset.from_list([dict(tokenizer(text)) for text in texts])
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=6,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        logging_steps=logging_steps,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    return Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=collator,
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("logging_steps", [2, 3])
def test_eval_callback_leaves_the_trainers_loss_logs_as_they_are(
    tiny_model_dir: Path, tmp_path: Path, logging_steps: int
) -> None:
    """With the callback every 2 steps, the trainer logs the same loss, grad norm and learning
    rate at the same steps as without it: with logging_steps = every_n_steps (the README's set-up)
    and with logging steps that fall between evaluations."""
    without = _plain_trainer(tiny_model_dir, tmp_path / "without", logging_steps)
    without.train()
    expected = _loss_logs(without.state.log_history)
    assert [entry["step"] for entry in expected] == list(range(logging_steps, 7, logging_steps))

    trainer = _plain_trainer(tiny_model_dir, tmp_path / "with", logging_steps)
    callback = evalharness.EvalCallback(
        trainer,
        tasks=[TASK],
        every_n_steps=2,
        limit=1,
        store=tmp_path / "runs.sqlite",
        task_options=OPTIONS,
    )
    trainer.add_callback(callback)
    trainer.train()

    assert _loss_logs(trainer.state.log_history) == expected
    logged = [e for e in trainer.state.log_history if "evalharness/mt_bench/score" in e]
    assert [entry["step"] for entry in logged] == [2, 4, 6]


def test_no_submodule_shadows_an_api_name() -> None:
    """`evalharness.compare` is the function even after every submodule is imported (a module
    `evalharness/compare.py` would replace it as an attribute of the package once imported)."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(evalharness.__path__[:1]):
        if module.name != "__main__":  # that one runs the CLI
            importlib.import_module(f"evalharness.{module.name}")
    for name in ("evaluate", "compare", "Results", "EvalCallback"):
        assert not isinstance(getattr(evalharness, name), type(evalharness)), name
