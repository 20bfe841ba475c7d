"""Where a model named by a spec runs, in what dtype, and what of that is identity.

This machine has no GPU, so the accelerator is simulated (`torch.cuda.is_available` and friends
monkeypatched) wherever the choice itself is under test; everything that really runs, runs on
the CPU. The rule (`evalharness.backends.devices`): `--device auto` is the first accelerator,
`--dtype auto` the checkpoint's dtype there and float32 on the CPU; the resolved dtype is part
of a model's identity, the device never is; provenance records both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import cli_env, pipeline_error, run_cli, run_json, task_flags, tiny_run_args
from tiny_models import build_tiny_classifier, build_tiny_reward_model, tiny_config

from evalharness.backends.hf import HFBackend
from evalharness.backends.reward import RewardModelBackend
from evalharness.backends.spec import parse_model_spec
from evalharness.backends.vllm import VLLMBackend
from evalharness.errors import InputError
from evalharness.store.run_store import RunStore

DRIFTCAPS = [*task_flags("driftcaps", data="builtin", max_new_tokens=6), "--limit", "4"]


def pretend_cuda(monkeypatch: pytest.MonkeyPatch, count: int = 2) -> None:
    """Make torch report `count` CUDA devices (device 0 current) on this CPU-only machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture()
def bf16_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model with a config that declares bfloat16 weights, as most hub models do."""
    directory = tmp_path / "bf16"
    shutil.copytree(tiny_model_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config.pop("torch_dtype", None)
    config["dtype"] = "bfloat16"
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def scorer_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scorers")
    return {
        "rm": build_tiny_reward_model(folder / "rm"),
        "clf": build_tiny_classifier(folder / "clf", ("compliance", "refusal")),
    }


# -- identity ------------------------------------------------------------------------------------
def test_auto_dtype_on_the_cpu_has_the_float32_identity(
    tiny_model_dir: Path, scorer_dirs: dict[str, Path]
) -> None:
    """Runs cached before dtype `auto` became the default (float32 on the CPU) stay valid."""
    if torch.cuda.is_available():
        pytest.skip("auto is the GPU here")
    backends = {
        "hf": (HFBackend, f"hf:{tiny_model_dir}"),
        "vllm": (VLLMBackend, f"vllm:{tiny_model_dir}"),
        "rm": (RewardModelBackend, f"rm:{scorer_dirs['rm']}"),
        "clf": (RewardModelBackend, f"clf:{scorer_dirs['clf']}"),
    }
    for name, (backend, spec) in backends.items():
        auto = backend(parse_model_spec(spec, dtype="auto"))
        default = backend(parse_model_spec(spec))
        explicit = backend(parse_model_spec(spec, dtype="float32"))
        assert auto.identity["dtype"] == "float32", name
        assert auto.identity_hash == default.identity_hash == explicit.identity_hash, name


def test_the_device_is_not_identity_and_the_resolved_dtype_is(
    bf16_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = f"hf:{bf16_checkpoint}"
    on_cpu = HFBackend(parse_model_spec(spec, device="cpu", dtype="bfloat16"))
    cpu_auto = HFBackend(parse_model_spec(spec, device="cpu"))
    pretend_cuda(monkeypatch)
    on_gpu = HFBackend(parse_model_spec(spec, device="cuda", dtype="bfloat16"))
    gpu_auto = HFBackend(parse_model_spec(spec))
    assert on_gpu.placement.device == torch.device("cuda", 0)
    assert on_cpu.identity == on_gpu.identity
    assert on_cpu.identity_hash == on_gpu.identity_hash
    # auto: the checkpoint's bfloat16 on the GPU, float32 on the CPU; cached apart.
    assert gpu_auto.placement.device.type == "cuda"
    assert gpu_auto.identity["dtype"] == "bfloat16" and cpu_auto.identity["dtype"] == "float32"
    assert gpu_auto.identity_hash == on_cpu.identity_hash != cpu_auto.identity_hash


# -- loading -------------------------------------------------------------------------------------
def test_a_gpu_load_asks_transformers_for_the_device_and_the_checkpoints_dtype(
    bf16_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU exists here, so `from_pretrained`'s keyword arguments are captured (monkeypatch)
    and the model is then loaded on the CPU without the device map: this checks what the
    backend asks transformers for when it sees CUDA, which is all that can be checked here."""
    from transformers import AutoModelForCausalLM

    asked: list[dict[str, Any]] = []
    original = AutoModelForCausalLM.from_pretrained

    def capture(directory: Any, **kwargs: Any) -> Any:
        asked.append(kwargs)
        kept = {k: v for k, v in kwargs.items() if k != "device_map"}
        return original(directory, **kept)

    pretend_cuda(monkeypatch)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", capture)
    backend = HFBackend(parse_model_spec(f"hf:{bf16_checkpoint}"))
    assert backend.model is not None
    (kwargs,) = asked
    assert kwargs["device_map"] == {"": "cuda:0"}
    assert kwargs["dtype"] == torch.bfloat16
    spread = HFBackend(parse_model_spec(f"hf:{bf16_checkpoint}", device_map="auto"))
    assert spread.model is not None
    assert asked[1]["device_map"] == "auto" and asked[1]["dtype"] == torch.bfloat16


def test_vllm_is_given_the_resolved_dtype(
    bf16_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's own `auto` is not ours (it may pick float16 for a float32 checkpoint): the dtype
    the identity names is the one the engine is told."""
    if torch.cuda.is_available():
        pytest.skip("auto is the GPU here")
    spec = f"vllm:{bf16_checkpoint}"
    assert VLLMBackend(parse_model_spec(spec, dtype="auto")).engine_options()["dtype"] == (
        "float32"
    )
    pretend_cuda(monkeypatch)
    assert VLLMBackend(parse_model_spec(spec)).engine_options()["dtype"] == "bfloat16"
    with pytest.raises(InputError, match="vllm spreads a model over GPUs with --tensor"):
        VLLMBackend(parse_model_spec(spec, device_map="auto"))
    with pytest.raises(InputError, match="--device cuda:1: vllm runs on cuda here"):
        VLLMBackend(parse_model_spec(spec, device="cuda:1"))


#: A backend built for its identity alone (what a cached run does) in a fresh process.
IDENTITY_ONLY = """
import json, sys
from evalharness.backends import load_backend
from evalharness.backends.devices import accelerator_possible
from evalharness.backends.spec import parse_model_spec
possible = accelerator_possible()
load_backend(parse_model_spec(sys.argv[1])).identity_hash
print(json.dumps({"possible": possible, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("kind", ["vllm", "rm"])
def test_a_backend_built_for_its_identity_leaves_torch_alone_on_a_cpu_machine(
    kind: str, tiny_model_dir: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", IDENTITY_ONLY, f"{kind}:{tiny_model_dir}"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    if outcome["possible"]:
        pytest.skip("an accelerator's driver is present: torch decides")
    assert outcome["torch"] is False


def test_ray_workers_each_load_on_their_own_gpu_in_the_drivers_dtype(
    bf16_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray gives each actor one GPU and hides the others (CUDA_VISIBLE_DEVICES): a replica
    asked for the driver's `cuda:1` would find no such device, so it loads on `cuda`."""
    pytest.importorskip("ray")
    from evalharness.backends.sharded import ShardedBackend

    spec = f"hf:{bf16_checkpoint}"
    on_cpu = ShardedBackend(parse_model_spec(spec, workers=2, device="cpu"))
    pretend_cuda(monkeypatch)
    assert on_cpu._default_gpus() == 0.0  # a CPU model asks Ray for no GPU
    sharded = ShardedBackend(parse_model_spec(spec, workers=2, device="cuda:1"))
    assert sharded.replica_spec.device == "cuda"
    assert sharded.replica_spec.dtype == "bfloat16"
    assert sharded._default_gpus() == 1.0
    assert sharded.identity_hash == HFBackend(parse_model_spec(spec)).identity_hash
    with pytest.raises(InputError, match="--device-map spreads one model"):
        ShardedBackend(parse_model_spec(spec, workers=2, device_map="auto"))


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (["--device", "cuda"], "--device cuda: no CUDA device is visible to this process"),
        (["--device", "cuda:0"], "--device cuda:0: no CUDA device is visible"),
        (["--device", "gpu"], "--device 'gpu' is not a device; use auto"),
        (["--device-map", "everywhere"], "--device-map 'everywhere' is not a placement"),
        (["--device", "cpu", "--device-map", "auto"], "--device-map auto places the model"),
        (["--judge", "SELF_SPEC", "--judge-device", "cuda"], "--judge-device cuda: no CUDA"),
    ],
)
def test_a_device_this_machine_lacks_is_one_line_and_creates_no_run(
    flags: list[str],
    expect: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    store = tmp_path / "store.sqlite"
    flags = [f"hf:{tiny_model_dir}" if f == "SELF_SPEC" else f for f in flags]
    code, out, err = run_cli(capsys, *tiny_run_args(tiny_model_dir, store, *flags))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"evalharness: error: {expect}"), line
    if store.exists():
        assert RunStore(store).list_runs() == []


def test_the_python_api_refuses_a_missing_device_before_opening_the_store(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from evalharness import evaluate

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    store = tmp_path / "store.sqlite"
    with pytest.raises(InputError, match="^--device cuda: no CUDA device"):
        evaluate(f"hf:{tiny_model_dir}", "driftcaps", store=store, device="cuda")
    assert not store.exists()


#: A cached `run` in a fresh process: whether torch could have been needed (an accelerator's
#: driver is present) and whether it was imported.
CACHED_RUN = """
import json, sys
from evalharness.cli import main
from evalharness.backends.devices import accelerator_possible
possible = accelerator_possible()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "possible": possible, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cached_run_on_a_cpu_machine_never_imports_torch(
    workers: int, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's device check and identity decide `auto` without torch where no accelerator's
    driver exists: a cached run answers in well under the second torch's import costs (with
    `--workers` too: Ray starts on the first uncached request only)."""
    store = tmp_path / "store.sqlite"
    args = tiny_run_args(tiny_model_dir, store, "--limit", "1", "--max-judge-calls", "0")
    assert run_json(capsys, *args)["calls_made"]["model"] > 0
    cached = [*args, "--json", "--judge-device", "cpu", "--workers", str(workers)]
    done = subprocess.run(
        [sys.executable, "-c", CACHED_RUN, *cached],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    if outcome["possible"]:
        pytest.skip("an accelerator's driver is present: torch decides")
    assert outcome == {"code": 0, "possible": False, "torch": False}, done.stderr[-2000:]


# -- a real run ----------------------------------------------------------------------------------
def test_device_cpu_dtype_auto_gives_todays_default_run_and_records_where_it_ran(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same run computed twice from scratch (two stores): the old default's explicit
    float32, and `--device cpu --dtype auto`. Same run id, answers and metrics; provenance,
    `run --json` and `show` say where it ran."""
    if torch.cuda.is_available():
        pytest.skip("auto is the GPU here")
    old_store, new_store = tmp_path / "old.sqlite", tmp_path / "new.sqlite"

    def run(store: Path, *flags: str) -> dict[str, Any]:
        return run_json(
            capsys,
            "run",
            "--model",
            f"hf:{tiny_model_dir}",
            *DRIFTCAPS,
            "--store",
            str(store),
            *flags,
        )

    old = run(old_store, "--dtype", "float32")
    new = run(new_store, "--device", "cpu", "--dtype", "auto")
    assert new["calls_made"]["model"] == old["calls_made"]["model"] > 0
    assert new["run_id"] == old["run_id"]
    assert new["tasks"] == old["tasks"]
    answers = [
        RunStore(s).get_run_responses(old["run_id"], "driftcaps") for s in (old_store, new_store)
    ]
    assert answers[0] == answers[1] and answers[0]
    where = {"device": "cpu", "dtype": "float32"}
    assert new["devices"]["model"] == where
    stored = RunStore(new_store).get_run(new["run_id"])
    assert stored["provenance"]["devices"]["model"] == where
    shown = run_json(capsys, "show", new["run_id"], "--store", str(new_store))
    assert shown["devices"]["model"] == where
    code, out, _ = run_cli(capsys, "show", new["run_id"], "--store", str(new_store))
    assert code == 0 and 'devices {"model": {"device": "cpu", "dtype": "float32"}' in out


# -- serve ---------------------------------------------------------------------------------------
def test_served_logprobs_are_the_models_own_with_a_soft_capped_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server scores as the model's head does (`LMHead`: scale, bias, soft cap): through
    the fused kernel without alternatives, and a vocabulary block at a time with them; both
    must give the model's own log_softmax. A Gemma-2 head caps its logits, which a plain
    `hidden @ weight.T` misses."""
    from types import SimpleNamespace

    from transformers import Gemma2Config, Gemma2ForCausalLM

    from evalharness.serve import logprobs

    torch.manual_seed(0)
    config = tiny_config(
        Gemma2Config, 67, 16, head_dim=8, final_logit_softcapping=1.5, pad_token_id=0
    )
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():  # logits of a few units, where the cap bends them
        model.get_output_embeddings().weight.mul_(40.0)
    # A budget of 48 logits: one row at a time, three vocabulary entries per block.
    monkeypatch.setattr(logprobs, "LOGIT_ELEMENTS", 48, raising=False)
    backend = SimpleNamespace(model=model, tokenizer=SimpleNamespace(pad_token_id=0))
    sequences = [([5, 9, 17, 3, 40, 22], 1), ([7, 8, 60], 2)]
    served = logprobs.batch_logprobs(backend, sequences, top_k=3)  # type: ignore[arg-type]
    plain = logprobs.batch_logprobs(backend, sequences, top_k=0)  # type: ignore[arg-type]
    for (ids, start), scored, chosen in zip(sequences, served, plain, strict=True):
        assert [t.logprob for t in chosen] == pytest.approx([t.logprob for t in scored], abs=1e-5)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        reference = torch.log_softmax(logits, dim=-1)
        for position, token in enumerate(scored, start=start):
            row = reference[position - 1]
            assert token.token_id == ids[position]
            assert token.logprob == pytest.approx(float(row[ids[position]]), abs=1e-5)
            values, indices = row.topk(3)
            assert [t for t, _ in token.top] == indices.tolist()
            assert [v for _, v in token.top] == pytest.approx(values.tolist(), abs=1e-5)


# -- pipeline ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("keys", "expect"),
    [
        ("device: cuda", "evaluate.device cuda: no CUDA device is visible"),
        ("device: tpu", "evaluate.device 'tpu' is not a device"),
        ("device_map: everywhere", "--device-map 'everywhere' is not a placement"),
        ("device: cpu, device_map: auto", "evaluate.device_map places the model over every"),
    ],
)
def test_a_pipeline_checks_the_evaluate_device_before_training(
    keys: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config, message = pipeline_error(tmp_path, capsys, f"evaluate: {{tasks: [driftcaps], {keys}}}")
    assert message.startswith(f"evalharness: error: {config}:2: {expect}"), message


# -- judges and best-of-N ------------------------------------------------------------------------
def test_a_local_judge_runs_where_told_and_provenance_says_so(
    tiny_model_dir: Path,
    scorer_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "store.sqlite"
    result = run_json(
        capsys,
        "run",
        "--model",
        f"hf:{tiny_model_dir}",
        *DRIFTCAPS,
        "--judge",
        f"clf:{scorer_dirs['clf']}",
        "--judge-device",
        "cpu",
        "--store",
        str(store),
    )
    where = {"device": "cpu", "dtype": "float32"}
    stored = RunStore(store).get_run(result["run_id"])["provenance"]["devices"]
    assert stored == result["devices"] == {"model": where, "judge": where}


def test_best_of_n_places_the_sampled_model_and_its_scorer_on_the_device(
    tiny_model_dir: Path, scorer_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalharness.backends.best_of_n import BestOfNBackend

    pretend_cuda(monkeypatch)
    spec = f"bon:2:rm:{scorer_dirs['rm']}:hf:{tiny_model_dir}"
    backend = BestOfNBackend(parse_model_spec(spec, device="cuda:1"))
    assert backend.model.placement.device == torch.device("cuda", 1)
    assert backend.scorer.backend.placement.device == torch.device("cuda", 1)
    judged = BestOfNBackend(
        parse_model_spec(f"bon:2:hf:{tiny_model_dir}:hf:{tiny_model_dir}", device="cpu")
    )
    assert judged.scorer.backend.placement.device == torch.device("cpu")


def test_every_command_that_loads_a_model_takes_the_device(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--device cuda` reaches the model loader of each command: on a machine without CUDA each
    one says so in one line (and none stores a run)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from cli_helpers import free_port

    model = f"hf:{tiny_model_dir}"
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"context": "a", "continuation": " b"}) + "\n")
    completions = tmp_path / "completions.jsonl"
    completions.write_text(json.dumps({"id": "1", "prompt": "p", "completion": "c"}) + "\n")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps([{"instruction": "i", "output": "o", "generator": "g"}]))
    store = str(tmp_path / "store.sqlite")
    commands = {
        "score": ["score", "--model", model, "--input", str(rows)],
        "serve": ["serve", "--model", model, "--port", str(free_port())],
        "parity": ["parity", "--a", model, "--b", model],
        "judge": ["judge", "--judge", model, "--input", str(completions)],
        "import": ["import", "alpaca-eval", "--outputs", str(outputs), "--judge", model],
        "bon": ["run", "--model", f"bon:2:{model}:{model}", *DRIFTCAPS],
    }
    for name, argv in commands.items():
        flag = "--judge-device" if name == "import" else "--device"
        stored = ["--store", store] if name in ("import", "bon") else []
        code, _, err = run_cli(capsys, *argv, flag, "cuda", *stored)
        assert code == 2, (name, err)
        (line,) = err.strip().splitlines()
        assert "cuda: no CUDA device is visible to this process" in line, (name, line)
    assert not Path(store).exists() or RunStore(Path(store)).list_runs() == []


# -- on a real GPU (skipped without one; run by the GPU test script) ------------------------------
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
#: Largest |log p| difference per continuation between CUDA and the CPU in float32 (kernel
#: rounding: TF32 is off for matmuls by default) and in the checkpoint's bfloat16.
GPU_FLOAT32_TOLERANCE = 1e-3
GPU_BFLOAT16_TOLERANCE = 0.1
SCORED = [
    ("The answer is", " yes"),
    ("Rating: [[", "7]]"),
    ("Name a colour:", " red, then blue"),
    ("1 2 3 4", " 5 6 7"),
]


@pytest.mark.gpu
@requires_cuda
def test_gpu_scores_agree_with_the_cpu_within_the_stated_tolerance(bf16_checkpoint: Path) -> None:
    from evalharness.engine.requests import ScoreRequest

    requests = [ScoreRequest(continuation=c, context=x) for x, c in SCORED]
    spec = f"hf:{bf16_checkpoint}"
    cpu = HFBackend(parse_model_spec(spec, device="cpu"))
    gpu32 = HFBackend(parse_model_spec(spec, device="cuda", dtype="float32"))
    gpu = HFBackend(parse_model_spec(spec))
    assert next(gpu32.model.parameters()).device.type == "cuda"
    assert next(gpu.model.parameters()).dtype == torch.bfloat16
    assert gpu32.identity_hash == cpu.identity_hash != gpu.identity_hash
    reference = [r.logprob for r in cpu.score(requests)]
    for backend, tolerance in ((gpu32, GPU_FLOAT32_TOLERANCE), (gpu, GPU_BFLOAT16_TOLERANCE)):
        found = [r.logprob for r in backend.score(requests)]
        assert found == pytest.approx(reference, abs=tolerance)


@pytest.mark.gpu
@requires_cuda
def test_a_model_spread_over_two_gpus_scores_as_on_one(tiny_model_dir: Path) -> None:
    """Under a device map the decoder ends on the last GPU while the tied head stays with the
    embeddings on the first: the scores must not depend on where each half landed."""
    from evalharness.engine.requests import ScoreRequest

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")

    requests = [ScoreRequest(continuation=c, context=x) for x, c in SCORED]
    spec = f"hf:{tiny_model_dir}"
    one = HFBackend(parse_model_spec(spec, device="cuda", dtype="float32"))
    spread = HFBackend(parse_model_spec(spec, device_map="balanced", dtype="float32"))
    assert len(set(spread.model.hf_device_map.values())) > 1
    found = [r.logprob for r in spread.score(requests)]
    assert found == pytest.approx([r.logprob for r in one.score(requests)], abs=1e-5)


@pytest.mark.gpu
@requires_cuda
def test_a_gpu_run_records_the_card(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store.sqlite"
    argv = ["run", "--model", f"hf:{tiny_model_dir}", *DRIFTCAPS, "--store", str(store)]
    result = run_json(capsys, *argv)
    where = result["devices"]["model"]
    assert where["device"] == f"cuda:{torch.cuda.current_device()}"
    assert where["device_name"] == torch.cuda.get_device_name()
    on_cpu = run_json(capsys, *argv, "--device", "cpu", "--dtype", where["dtype"])
    assert on_cpu["run_id"] == result["run_id"]  # the device is not identity


def test_a_model_in_memory_runs_where_it_is_and_provenance_says_where(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalharness import evaluate

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    store = tmp_path / "store.sqlite"
    options = {"driftcaps": {"data": "builtin", "max_new_tokens": "4"}}
    with pytest.raises(InputError, match="a model in memory runs where it is"):
        evaluate(model, "driftcaps", tokenizer=tokenizer, device="cpu", store=store)
    results = evaluate(
        model, "driftcaps", tokenizer=tokenizer, limit=2, task_options=options, store=store
    )
    assert results.raw["devices"]["model"] == {"device": "cpu", "dtype": "float32"}
