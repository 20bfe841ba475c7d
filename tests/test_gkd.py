"""GKD end to end on tiny models: a teacher that says " good", a random student, a rule reward.

The teacher is a one-layer GPT-2 over the tiny chat tokenizer with hand-set weights: its final
layer norm outputs a constant vector, so whatever the context its next token is " good" with
probability ~0.88 (the rest spread over the vocabulary). The rule reward is the fraction of a
completion's words that are "good". Distilling that teacher on the student's own samples must
raise the student's mean reward, and the checkpoint must reload and evaluate as `hf:OUT`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import run_cli, run_json
from test_losses_distill import trl_compute_loss
from tiny_models import build_tokenizer, phrase
from train_configs import train_args, train_config

from evalharness.engine.training import ONLINE_LOOPS
from evalharness.errors import InputError
from evalharness.trainers import gkd as gkd_loop
from evalharness.trainers.gkd import train_gkd

# Tiny-model training: one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORD = "good"


def reward(prompt: list[dict[str, str]], completion: str, row: dict[str, Any]) -> float:
    """The rule reward: the share of the completion's words that are "good"."""
    words = completion.split()
    return sum(word.strip(".,!?").lower() == WORD for word in words) / max(len(words), 1)


def build_teacher(directory: Path, logit: float = 8.0) -> Path:
    """A GPT-2 whose next-token logits are `logit` for " good" and 0 for every other token,
    whatever the input: layer norm weight 0 and bias `logit`·e_0 make every final hidden state
    that vector, and the tied embedding's column 0 is 1 only at " good"."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer()
    (good,) = tokenizer(f" {WORD}", add_special_tokens=False)["input_ids"]
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=512, n_embd=8, n_layer=1, n_head=1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = logit
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[good, 0] = 1.0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_teacher(tmp_path_factory.mktemp("gkd-teacher"))


@pytest.fixture(scope="module")
def gkd_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conversations and prompt + completion rows (both of TRL's GKD forms); the dataset's
    completions do not say "good", so only the teacher can teach it."""
    rng = random.Random(0)
    rows: list[dict[str, Any]] = []
    for index in range(8):
        prompt = phrase(rng, 4)
        if index % 2:
            rows.append({"prompt": prompt, "completion": " cat runs"})
        else:
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": "cat runs"},
                    ]
                }
            )
    path = tmp_path_factory.mktemp("gkd-data") / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def gkd_args(teacher: Path, *options: str) -> list[str]:
    args = ["--loss-arg", f"teacher=hf:{teacher}", "--max-new-tokens", "6", "--quiet", "--json"]
    for option in options:
        args += ["--loss-arg", option]
    return args


def metrics(out: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_gkd_is_an_online_loop() -> None:
    assert ONLINE_LOOPS["gkd"] == "gkd:train_gkd"


def test_on_policy_distillation_raises_the_rule_reward_and_the_checkpoint_evaluates(
    tiny_model_dir: Path,
    teacher_dir: Path,
    gkd_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "gkd"
    code, stdout, err = run_cli(
        capsys, *train_args("gkd", tiny_model_dir, gkd_data, out),
        *gkd_args(teacher_dir, "lmbda=1.0"),
        "--reward", f"python:{__file__}:reward",
        "--batch-size", "4", "--max-steps", "6", "--lr", "2e-2",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 6
    steps = metrics(out)
    assert [s["source"] for s in steps] == [0.0] * 6  # lmbda = 1: always the student's samples
    rewards = [s["reward/mean"] for s in steps]
    # The first step's samples come from the untrained student; by the end it says "good".
    assert rewards[0] < 0.25 and sum(rewards[-2:]) / 2 > 0.5, rewards
    assert steps[-1]["loss"] < steps[0]["loss"]
    saved = json.loads((out / "train.json").read_text())
    assert saved["teacher"] == f"hf:{teacher_dir}"
    assert saved["config"]["temperature"] == 0.9  # GKD's sampling temperature, TRL's default
    scores = {
        name: evaluate_says_good(model, tmp_path / f"store-{name}", capsys)
        for name, model in (("base", tiny_model_dir), ("gkd", out))
    }
    assert scores["base"] == 0.0 and scores["gkd"] == 1.0, scores


def evaluate_says_good(model: Path, store: Path, capsys: pytest.CaptureFixture[str]) -> float:
    """`evalharness run` of a folder task: does greedy generation start with the word good?"""
    folder = store.parent / f"{store.name}-task"
    folder.mkdir()
    (folder / "rows.csv").write_text("word,target\n" + "".join(f"{w},{WORD}\n" for w in "abc"))
    (folder / "task.yaml").write_text(
        "name: says_good\noutput_type: generate\ndata: rows.csv\nprompt: 'Say {{ word }}'\n"
        "target: target\nmax_new_tokens: 3\nscoring:\n  regex: '(\\w+)'\n  ignore_case: true\n"
    )
    result = run_json(
        capsys, "run", "--model", f"hf:{model}", "--dtype", "float32", "--no-progress",
        "--store", str(store), "--tasks", str(folder),
    )  # fmt: skip
    return result["tasks"]["says_good"]["metrics"]["exact_match"]


def test_first_step_on_dataset_completions_is_trl_compute_loss(
    tiny_model_dir: Path, teacher_dir: Path, gkd_data: Path, tmp_path: Path
) -> None:
    """lmbda 0 (and no seq_kd): every step trains on the dataset's completions, and the first
    logged loss is TRL's `compute_loss` (the numpy transcription) on the two models' logits
    over those rows, the whole dataset being one batch."""
    from evalharness.trainers.data import collate, load_rows, tokenize_rows
    from evalharness.trainers.models import load_model

    out = tmp_path / "gkd-data"
    config = train_config(
        "gkd", tiny_model_dir, gkd_data, out, batch_size=8, max_steps=2, learning_rate=1e-3,
        loss_args={"teacher": f"hf:{teacher_dir}", "lmbda": 0.0, "beta": 0.3},
    )  # fmt: skip
    summary = train_gkd(config, progress=False)
    steps = metrics(out)
    assert summary.steps == 2 and [s["source"] for s in steps] == [2.0, 2.0]
    student = load_model(f"hf:{tiny_model_dir}", "float32")
    teacher = load_model(f"hf:{teacher_dir}", "float32").model
    rows = load_rows(str(gkd_data), "sft")
    examples = tokenize_rows(rows, "sft", student.tokenizer, assistant_turns="last")
    batch = collate(examples, "sft", student.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = [
            m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            for m in (student.model, teacher)
        ]
    student_logits, teacher_logits = (x.double().numpy() for x in logits)
    expected = trl_compute_loss(student_logits, teacher_logits, batch["labels"].numpy(), 0.3)
    assert steps[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(steps[1]["loss"])


def test_seq_kd_trains_on_the_teachers_samples(
    tiny_model_dir: Path,
    teacher_dir: Path,
    gkd_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """lmbda 0 with seq_kd: the completions are the teacher's samples, never the student's."""
    seen: list[list[int]] = []
    original = gkd_loop.rollout_batch

    def spy(rows: list[tuple[list[int], list[int]]], *args: Any) -> Any:
        seen.extend(completion for _, completion in rows)
        return original(rows, *args)

    monkeypatch.setattr(gkd_loop, "rollout_batch", spy)
    config = train_config(
        "gkd", tiny_model_dir, gkd_data, tmp_path / "o", batch_size=4, max_steps=1,
        max_new_tokens=5,
        loss_args={"teacher": f"hf:{teacher_dir}", "lmbda": 0.0, "seq_kd": True},
    )  # fmt: skip
    train_gkd(config, progress=False)
    assert metrics(tmp_path / "o")[0]["source"] == 1.0
    good = build_tokenizer()(f" {WORD}", add_special_tokens=False)["input_ids"][0]
    tokens = [token for completion in seen for token in completion]
    assert len(seen) == 4 and sum(t == good for t in tokens) / len(tokens) > 0.5


@pytest.mark.parametrize(
    ("loss_args", "extra", "message"),
    [
        ({}, {}, "method gkd needs a teacher"),
        ({"teacher": "TEACHER", "beta": 1.5}, {}, "beta=1.5 must lie in [0, 1]"),
        ({"teacher": "TEACHER"}, {"temperature": 0.7}, "set loss_args temperature instead"),
    ],
)
def test_bad_settings_are_one_line_errors_before_loading(
    loss_args: dict[str, Any],
    extra: dict[str, Any],
    message: str,
    tiny_model_dir: Path,
    teacher_dir: Path,
    gkd_data: Path,
    tmp_path: Path,
) -> None:
    loss_args = {k: f"hf:{teacher_dir}" if v == "TEACHER" else v for k, v in loss_args.items()}
    config = train_config(
        "gkd", tiny_model_dir, gkd_data, tmp_path / "o", loss_args=loss_args, **extra
    )
    with pytest.raises(InputError) as error:
        train_gkd(config, progress=False)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_text_rows_and_another_vocabulary_are_one_line_errors(
    tiny_model_dir: Path, gkd_data: Path, tmp_path: Path
) -> None:
    text = tmp_path / "text.jsonl"
    text.write_text('{"prompt": "a", "completion": " b"}\n{"text": "plain text"}\n')
    config = train_config(
        "gkd", tiny_model_dir, text, tmp_path / "o", loss_args={"teacher": "hf:unused"}
    )
    with pytest.raises(InputError, match=f"{text}:2: method gkd needs rows with prompt"):
        train_gkd(config, progress=False)
    other = build_teacher(tmp_path / "other")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(other)
    model.resize_token_embeddings(model.config.vocab_size + 8)
    model.save_pretrained(other)
    config = train_config(
        "gkd", tiny_model_dir, gkd_data, tmp_path / "o2", loss_args={"teacher": f"hf:{other}"}
    )
    with pytest.raises(InputError, match="same vocabulary"):
        train_gkd(config, progress=False)
