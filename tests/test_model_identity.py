"""A model's identity (its cache key) covers every file that can change its answers.

Responses are cached under the model's identity hash, so a file missing from the identity lets
an edited checkpoint answer with the old model's cached answers: same run id, zero calls. These
tests edit a checkpoint in place the way users do and check that the next run asks the model
again, that an unchanged re-run still makes no call, and that the big weights are not re-hashed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli, task_flags
from tiny_models import build_tiny_classifier, build_tiny_reward_model

from evalharness.backends.hf import HFBackend
from evalharness.backends.reward import RewardModelBackend
from evalharness.backends.spec import parse_model_spec
from evalharness.backends.vllm import VLLMBackend
from evalharness.store import hashing
from evalharness.store.run_store import RunStore

DRIFTCAPS = [*task_flags("driftcaps", data="builtin", max_new_tokens=4), "--limit", "1"]


def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def shrink_context(model: Path) -> None:
    edit_json(model / "config.json", max_position_embeddings=16)


def tokenizer_setting(model: Path) -> None:
    edit_json(model / "tokenizer_config.json", clean_up_tokenization_spaces=True)


def special_tokens(model: Path) -> None:
    (model / "special_tokens_map.json").write_text(
        json.dumps({"additional_special_tokens": ["<|extra|>"]})
    )


EDITS: dict[str, Callable[[Path], None]] = {
    "config.json max_position_embeddings": shrink_context,
    "tokenizer_config.json": tokenizer_setting,
    "special_tokens_map.json": special_tokens,
}


@pytest.fixture(scope="module")
def cached_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the tiny model (edited in place by the tests) and a store holding one run
    of it, with that run's id."""
    folder = tmp_path_factory.mktemp("edited")
    model = folder / "model"
    shutil.copytree(tiny_model_dir, model)
    store = folder / "store.sqlite"
    argv = ["run", "--model", f"hf:{model}", *DRIFTCAPS, "--store", str(store), "--json"]
    return {"model": model, "store": store, "argv": argv}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_editing_a_checkpoint_file_in_place_asks_the_model_again(
    edit: str, cached_model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from evalharness.cli import main

    model: Path = cached_model["model"]
    argv: list[str] = cached_model["argv"]

    def run() -> dict[str, Any]:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    first = run()  # the first parameter fills the cache; later ones find it full
    again = run()
    assert again["run_id"] == first["run_id"]
    assert again["calls_made"]["model"] == 0  # an unchanged checkpoint answers from the cache

    saved = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    EDITS[edit](model)
    try:
        edited = run()
    finally:  # put the checkpoint back as it was
        for path in model.iterdir():
            if path.name not in saved:
                path.unlink()
        for name, content in saved.items():
            (model / name).write_bytes(content)
    assert edited["run_id"] != first["run_id"]
    assert edited["calls_made"]["model"] == 1  # the edited model answered for itself

    restored = run()
    assert restored["run_id"] == first["run_id"]
    assert restored["calls_made"]["model"] == 0


def identity_hash(directory: Path, backend: str = "hf") -> str:
    return HFBackend(parse_model_spec(f"{backend}:{directory}")).identity_hash


def test_files_that_cannot_change_outputs_are_left_out_and_any_other_file_counts(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    before = identity_hash(model)
    (model / "README.md").write_text("# my model\n")
    (model / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (model / "LICENSE").write_text("MIT\n")
    (model / "trainer_state.json").write_text("{}")
    (model / "optimizer.pt").write_bytes(b"\0" * 64)
    (model / "rng_state_0.pth").write_bytes(b"\1" * 16)
    (model / "checkpoint-500").mkdir()
    (model / "checkpoint-500" / "config.json").write_text("{}")
    assert identity_hash(model) == before

    for name in ("preprocessor_config.json", "merges.txt", "added_tokens.json"):
        (model / name).write_text("{}")
        changed = identity_hash(model)
        assert changed != before, name
        before = changed
    files = HFBackend(parse_model_spec(f"hf:{model}")).identity["files_sha256"]
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "added_tokens.json"} <= set(
        files
    )


def test_every_local_backend_hashes_the_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    reward = build_tiny_reward_model(tmp_path / "reward")
    classifier = build_tiny_classifier(tmp_path / "clf", ("safe", "unsafe"))
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    builders = {
        "rm": (reward, lambda d: RewardModelBackend(parse_model_spec(f"rm:{d}"))),
        "clf": (classifier, lambda d: RewardModelBackend(parse_model_spec(f"clf:{d}"))),
        "vllm": (model, lambda d: VLLMBackend(parse_model_spec(f"vllm:{d}"))),
    }
    for kind, (directory, build) in builders.items():
        before = build(directory).identity_hash
        assert build(directory).identity_hash == before, kind
        edit_json(directory / "config.json", max_position_embeddings=32)
        assert build(directory).identity_hash != before, kind


def test_big_files_are_hashed_once_per_size_and_mtime(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memo is what keeps a cached re-run of a multi-GB checkpoint from re-reading it."""
    monkeypatch.setenv("EVALHARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hashing, "MEMO_MIN_BYTES", 100_000)  # the tiny weights count as big
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    assert weights.stat().st_size >= 100_000 > (model / "tokenizer.json").stat().st_size
    first = identity_hash(model)

    hashed: list[str] = []
    real = hashing.sha256_file

    def counting(path: Path) -> str:
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    assert identity_hash(model) == first
    assert "model.safetensors" not in hashed  # from the memo
    assert "config.json" in hashed  # small files are always read: an edit cannot hide

    hashed.clear()
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert identity_hash(model) == first  # same bytes, re-read once for the new mtime
    assert hashed.count("model.safetensors") == 1


def test_a_model_in_memory_hashes_its_config_and_tokenizer() -> None:
    from tiny_models import build_model, build_tokenizer

    from evalharness.backends.in_memory import InMemoryHFBackend

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    tokenizer.pad_token = None  # the backend sets it: a second evaluation must hash the same
    first = InMemoryHFBackend(model, tokenizer, name="m").identity_hash
    assert InMemoryHFBackend(model, tokenizer, name="m").identity_hash == first
    model.config.max_position_embeddings = 16
    shorter = InMemoryHFBackend(model, tokenizer, name="m").identity_hash
    assert shorter != first
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|extra|>"]})
    assert InMemoryHFBackend(model, tokenizer, name="m").identity_hash != shorter


def test_a_peft_adapter_is_identified_with_its_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    """transformers loads an adapter directory's base by the name in adapter_config.json: an
    edit to the base changes the adapter's answers, so it changes the adapter's identity."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]

    identity = HFBackend(parse_model_spec(f"hf:{adapter}")).identity
    assert "adapter_config.json" in identity["files_sha256"]
    assert identity["base_model"]["weights_sha256"]
    before = identity_hash(adapter)
    edit_json(base / "config.json", max_position_embeddings=16)
    assert identity_hash(adapter) != before
    edit_json(adapter / "adapter_config.json", lora_alpha=64)
    assert len({before, identity_hash(adapter)}) == 2


def test_a_hub_model_is_identified_by_its_snapshot_commit(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hub snapshots are content-addressed by commit: the commit is their identity, and moving
    the branch to another commit moves the identity."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--acme--tiny"
    old, new = "a" * 40, "b" * 40
    for commit in (old, new):
        shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(old)

    first = HFBackend(parse_model_spec("hf:acme/tiny")).identity
    assert (first["hub_id"], first["revision"]) == ("acme/tiny", old)
    assert HFBackend(parse_model_spec(f"hf:acme/tiny@{new}")).identity["revision"] == new
    (repo / "refs" / "main").write_text(new)
    moved = HFBackend(parse_model_spec("hf:acme/tiny")).identity
    assert moved["revision"] == new


def without_tokenizer(tiny_model_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, target / name)
    return target


@pytest.mark.parametrize(
    ("role", "argv"),
    [
        ("candidate", ["--model", "hf:{bare}", "--tasks", "mt_bench"]),
        ("judge", ["--model", "hf:{tiny}", "--tasks", "mt_bench", "--judge", "hf:{bare}"]),
        ("reward model", ["--model", "hf:{tiny}", "--tasks", "mt_bench", "--judge", "rm:{bare}"]),
        ("classifier", ["--model", "hf:{tiny}", "--tasks", "driftcaps", "--judge", "clf:{bare}"]),
    ],
)
def test_a_checkpoint_without_a_tokenizer_is_one_line_and_no_run(
    role: str,
    argv: list[str],
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bare = without_tokenizer(tiny_model_dir, tmp_path / "bare")
    store = tmp_path / "store.sqlite"
    places = {"bare": str(bare), "tiny": str(tiny_model_dir)}
    filled = [arg.format(**places) for arg in argv]
    code, out, err = run_cli(
        capsys, "run", *filled, "--limit", "1", "--store", str(store), "--no-progress"
    )
    assert code == 2, role
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("evalharness: error: ")
    assert f"no tokenizer in {bare}" in line
    assert "tokenizer.json" in line  # what is missing
    assert not store.exists() or RunStore(store).list_runs() == []


def test_a_directory_without_config_or_weights_is_named(tmp_path: Path) -> None:
    from evalharness.errors import InputError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=f"no config.json .* in {empty}"):
        HFBackend(parse_model_spec(f"hf:{empty}"))
    (empty / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"no weight files \(\*\.safetensors\)"):
        HFBackend(parse_model_spec(f"hf:{empty}"))
