"""Rollouts through vLLM, for real: a one-step GRPO run on the default model (SmolLM2-135M) with
`rollouts: vllm`, one engine for the module (starting one costs ~30 s on a CPU, and each engine
step over a second under load, so the run and the probes take few of them).

Both weight pushes of the run are watched: the sampler's first, and the step's (the engine's
second in-place reload, after the weights really changed). Just before the step's push the
engine still answers as the policy did before the optimizer step (a large learning rate makes
that visible); just after each push the engine's prompt log-probs and greedy answer are the
trained policy's own (`hf`). Runs in the vLLM venv (`make test-vllm`); skips elsewhere, fails
there when vllm is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import write_lines
from test_vllm import require_vllm

from evalharness.cli import main
from evalharness.trainers.models import core_model, load_model
from evalharness.trainers.vllm_rollouts import VLLMSampler

MAX_NEW_TOKENS = 8
REWARD = "def spread(prompt, completion, row):\n    return float(sum(map(ord, completion)) % 7)\n"


@dataclass
class Agreement:
    """How far the engine is from the policy on one probe: the largest difference of their
    prompt log-probs, and how far below the policy's own best token each token of the engine's
    greedy answer is under the policy (0: the policy's greedy answer; ties aside)."""

    max_logprob_diff: float
    greedy_gap: float
    engine_greedy: list[int]


def agreement(sampler: VLLMSampler, model: Any, *, answer: bool = True) -> Agreement:
    """`answer=False`: the prompt log-probs only (one engine step rather than
    MAX_NEW_TOKENS + 1), where no greedy answer is checked; its greedy_gap is NaN."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    probe = list(sampler.llm.get_tokenizer()("The capital of France is")["input_ids"])
    requests = [SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)]
    if answer:
        requests.append(SamplingParams(max_tokens=MAX_NEW_TOKENS, temperature=0.0, ignore_eos=True))
    scored, *answered = sampler.llm.generate(
        [TokensPrompt(prompt_token_ids=probe)] * len(requests), requests, use_tqdm=False
    )
    engine = torch.tensor(
        [scored.prompt_logprobs[i][token].logprob for i, token in enumerate(probe) if i]
    )
    greedy = list(answered[0].outputs[0].token_ids) if answered else []
    sequence = torch.tensor([probe + greedy])
    with torch.no_grad():
        logps = core_model(model)(input_ids=sequence).logits[0, :-1].float().log_softmax(-1)
    chosen = logps.gather(-1, sequence[0, 1:, None])[:, 0]
    gaps = (logps.max(-1).values - chosen)[len(probe) - 1 :]
    own = chosen[: len(probe) - 1]
    gap = float(gaps.max()) if greedy else float("nan")
    return Agreement(float((engine - own).abs().max()), gap, greedy)


@dataclass
class WatchedRun:
    out: Path
    code: int
    pushes: list[tuple[Agreement, Agreement]]  # (just before, just after) each sync


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WatchedRun]:
    require_vllm()
    folder = tmp_path_factory.mktemp("vllm-rollouts")
    reward = folder / "spread_reward.py"
    reward.write_text(REWARD)
    data = write_lines(
        folder / "prompts.jsonl",
        [
            json.dumps({"prompt": f"Say {w}, please, and then say nothing else."})
            for w in ("cat", "sun")
        ],
    )
    pushes: list[tuple[Agreement, Agreement]] = []
    real_sync = VLLMSampler.sync

    def watched_sync(self: VLLMSampler, model: Any) -> None:
        before = agreement(self, model, answer=False)  # only its distance is checked
        real_sync(self, model)
        pushes.append((before, agreement(self, model)))

    out = folder / "grpo"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VLLMSampler, "sync", watched_sync)
        code = main(
            [
                "train", "--method", "grpo", "--model", "default", "--data", str(data),
                "--out", str(out), "--reward", f"python:{reward}:spread", "--rollouts", "vllm",
                "--group-size", "4", "--max-new-tokens", str(MAX_NEW_TOKENS),
                "--batch-size", "2", "--max-steps", "1", "--lr", "5e-4",
                "--loss-arg", "beta=0.0", "--quiet", "--json",
            ]
        )  # fmt: skip
    yield WatchedRun(out, code, pushes)


def test_grpo_with_vllm_rollouts_completes_and_writes_a_checkpoint(
    watched_run: WatchedRun,
) -> None:
    assert watched_run.code == 0
    out = watched_run.out
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1]
    assert all(0 < m["completion_tokens"] <= MAX_NEW_TOKENS for m in metrics)
    train = json.loads((out / "train.json").read_text())
    assert train["placement"]["rollouts"] == "vllm"
    assert train["config"]["rollouts"] == "vllm"
    reloaded = load_model(f"hf:{out}", "float32").model
    base = load_model("default", "float32").model
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(reloaded.get_parameter(name), base.get_parameter(name))


def test_every_step_pushes_the_trained_weights_into_the_engine(
    watched_run: WatchedRun,
) -> None:
    pushes = watched_run.pushes
    assert len(pushes) == 2  # at the start, then after the optimizer step
    for _, after in pushes:
        # Both float32: within the evaluator's parity tolerance of the policy itself.
        assert after.max_logprob_diff < 1e-3, after
        assert after.greedy_gap < 1e-3, after
        assert len(after.engine_greedy) == MAX_NEW_TOKENS  # the engine's context fits the probe
    start, step = pushes
    assert start[0].max_logprob_diff < 1e-3  # the engine starts on the policy's weights
    assert step[0].max_logprob_diff > 0.05, step[0]  # stale until pushed
