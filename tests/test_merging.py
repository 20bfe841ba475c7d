"""Model merging: uniform and greedy soups, interpolation, and the `evalharness merge` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import run_cli, tiny_run_args, write_lines
from tiny_models import build_tiny_chat_model, training_lines

from evalharness.errors import InputError
from evalharness.trainers.merging import (
    HeldoutLikelihood,
    describe,
    greedy_soup,
    interpolate,
    read_weights,
    save_merged,
    uniform_soup,
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def perturbed_copy(
    base: Path, out: Path, seed: int, scale: float, dtype: torch.dtype = torch.float32
) -> Path:
    """A stand-in for a fine-tune of `base`: every weight moved by seeded Gaussian noise."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():  # tied weights are listed once
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    model.to(dtype).save_pretrained(out)
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        shutil.copy2(base / name, out / name)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small fine-tunes of one tiny base model, and a ruined one (heavy noise)."""
    root = tmp_path_factory.mktemp("soup")
    base = build_tiny_chat_model(root / "base")
    return {
        "base": base,
        "a": perturbed_copy(base, root / "a", seed=1, scale=0.01),
        "b": perturbed_copy(base, root / "b", seed=2, scale=0.01),
        "c": perturbed_copy(base, root / "c", seed=3, scale=0.01),
        "noisy": perturbed_copy(base, root / "noisy", seed=4, scale=1.5),
    }


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for line in training_lines(n_lines=16, seed=7):
        words = line.split()
        rows.append(
            json.dumps({"context": " ".join(words[:3]), "continuation": " " + " ".join(words[3:])})
        )
    return write_lines(tmp_path_factory.mktemp("heldout") / "heldout.jsonl", rows)


def test_uniform_soup_is_the_exact_mean(checkpoints: dict[str, Path]) -> None:
    paths = [checkpoints[k] for k in ("a", "b", "c")]
    soup = uniform_soup(paths)
    states = [read_weights(p) for p in paths]
    assert set(soup) == set(states[0])
    for key, value in soup.items():
        expected = (states[0][key] + states[1][key] + states[2][key]) / 3
        assert value.dtype == torch.float32
        assert torch.equal(value, expected), key
        assert torch.allclose(value, torch.stack([s[key] for s in states]).mean(0), atol=1e-7)


def test_interpolation_endpoints_and_midpoint(checkpoints: dict[str, Path]) -> None:
    a, b = read_weights(checkpoints["a"]), read_weights(checkpoints["b"])
    at_a = interpolate(checkpoints["a"], checkpoints["b"], 0.0)
    at_b = interpolate(checkpoints["a"], checkpoints["b"], 1.0)
    middle = interpolate(checkpoints["a"], checkpoints["b"], 0.5)
    mean = uniform_soup([checkpoints["a"], checkpoints["b"]])
    for key in a:
        assert torch.equal(at_a[key], a[key]), key
        assert torch.equal(at_b[key], b[key]), key
        assert torch.equal(middle[key], mean[key]), key
    quarter = interpolate(checkpoints["a"], checkpoints["b"], 0.25)
    key = "model.embed_tokens.weight"
    assert torch.allclose(quarter[key], 0.75 * a[key] + 0.25 * b[key])


def test_greedy_soup_skips_a_harmful_ingredient(
    checkpoints: dict[str, Path], heldout: Path
) -> None:
    scorer = HeldoutLikelihood(heldout, checkpoints["a"])
    paths = [checkpoints[k] for k in ("noisy", "a", "b", "c")]
    seen: list[tuple[list[Path], float]] = []
    soup, chosen = greedy_soup(paths, scorer, on_score=lambda s, v: seen.append((s, v)))
    alone = {tuple(s)[0]: v for s, v in seen if len(s) == 1}
    assert len(alone) == 4
    assert alone[checkpoints["noisy"]] < min(alone[checkpoints[k]] for k in "abc")
    assert checkpoints["noisy"] not in chosen
    assert chosen[0] == max(alone, key=alone.__getitem__)
    assert scorer(soup) >= max(alone.values())
    # The soup is the plain mean of what it chose.
    expected = uniform_soup(chosen)
    for key in soup:
        assert torch.allclose(soup[key], expected[key], atol=1e-7)


def test_greedy_soup_keeps_ingredients_that_do_not_hurt(checkpoints: dict[str, Path]) -> None:
    """A score that cannot tell soups apart accepts every ingredient (>= is enough)."""
    paths = [checkpoints[k] for k in ("a", "b", "c")]
    soup, chosen = greedy_soup(paths, lambda state: 1.0)
    assert chosen == paths
    expected = uniform_soup(paths)
    assert all(torch.allclose(soup[k], expected[k], atol=1e-7) for k in soup)


def test_saved_merge_loads_keeps_tied_weights_and_scores_like_the_scorer(
    checkpoints: dict[str, Path],
    heldout: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from transformers import AutoModelForCausalLM

    soup = uniform_soup([checkpoints["a"], checkpoints["b"]])
    out = save_merged(soup, checkpoints["a"], tmp_path / "merged", {"method": "uniform"})
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        assert (out / name).read_bytes() == (checkpoints["a"] / name).read_bytes(), name
    assert json.loads((out / "merge.json").read_text())["method"] == "uniform"
    assert not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.model.embed_tokens.weight, soup["model.embed_tokens.weight"])

    code, printed, err = run_cli(capsys, "score", "--model", f"hf:{out}", "--input", str(heldout))
    assert code == 0, err
    rows = [json.loads(line) for line in printed.splitlines()]
    per_token = sum(r["logprob"] for r in rows) / sum(r["n_tokens"] for r in rows)
    assert HeldoutLikelihood(heldout, checkpoints["a"])(soup) == pytest.approx(per_token, abs=1e-4)


def test_merge_saves_in_the_first_checkpoints_dtype(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    half = [
        perturbed_copy(checkpoints["base"], tmp_path / f"bf{i}", seed=i, scale=0.01, dtype=d)
        for i, d in ((1, torch.bfloat16), (2, torch.float32))
    ]
    out = save_merged(uniform_soup(half), half[0], tmp_path / "merged")
    assert {dtype for _, dtype in describe(out).values()} == {"BF16"}


def test_cli_uniform_merge_runs_and_scores(
    checkpoints: dict[str, Path],
    heldout: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "soup"
    models = ",".join(str(checkpoints[k]) for k in ("a", "b", "c"))
    code, printed, err = run_cli(
        capsys, "merge", "--method", "uniform", "--models", models, "--out", str(out)
    )
    assert code == 0, err
    assert str(out) in printed and "uniform soup of 3" in printed
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "uniform" and len(record["chosen"]) == 3

    code, _, err = run_cli(capsys, "score", "--model", f"hf:{out}", "--input", str(heldout))
    assert code == 0, err
    code, _, err = run_cli(capsys, *tiny_run_args(out, tmp_path / "store.sqlite", "--limit", "1"))
    assert code == 0, err


def test_cli_greedy_and_linear(
    checkpoints: dict[str, Path],
    heldout: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = ",".join(str(checkpoints[k]) for k in ("a", "noisy", "b"))
    code, printed, err = run_cli(
        capsys,
        *("merge", "--method", "greedy", "--models", models),
        *("--out", str(tmp_path / "greedy"), "--heldout", str(heldout)),
    )
    assert code == 0, err
    record = json.loads((tmp_path / "greedy" / "merge.json").read_text())
    assert str(checkpoints["noisy"]) not in record["chosen"]
    assert record["heldout"] == str(heldout) and len(record["scores"]) >= 4

    pair = f"{checkpoints['a']},{checkpoints['b']}"
    code, printed, err = run_cli(
        capsys,
        *("merge", "--method", "linear", "--models", pair),
        *("--out", str(tmp_path / "linear"), "--alpha", "0.3"),
    )
    assert code == 0, err
    assert json.loads((tmp_path / "linear" / "merge.json").read_text())["alpha"] == 0.3
    merged = read_weights(tmp_path / "linear")
    expected = interpolate(checkpoints["a"], checkpoints["b"], 0.3)
    assert all(torch.equal(merged[k], expected[k]) for k in merged)


def test_cli_merge_refuses_bad_requests(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    three = ",".join(str(checkpoints[k]) for k in ("a", "b", "c"))
    cases = [
        ("--method", "linear", "--models", three, "--out", str(tmp_path / "x")),
        ("--method", "greedy", "--models", three, "--out", str(tmp_path / "y")),
        ("--method", "uniform", "--models", str(checkpoints["a"]), "--out", str(tmp_path / "z")),
        ("--method", "uniform", "--models", three, "--out", str(checkpoints["a"])),
    ]
    for argv in cases:
        code, _, err = run_cli(capsys, "merge", *argv)
        assert code == 2, argv
        assert err.count("\n") == 1 and err.startswith("evalharness: error:"), err


def test_mismatched_architectures_fail_with_one_line(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(checkpoints["a"])
    config.num_hidden_layers = 3
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "deeper")
    config.num_hidden_layers = 2
    config.intermediate_size = 96
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "wider")

    models = f"{checkpoints['a']},{tmp_path / 'deeper'}"
    code, _, err = run_cli(
        capsys, "merge", "--method", "uniform", "--models", models, "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert err.count("\n") == 1
    assert "model.layers.2." in err and str(tmp_path / "deeper") in err
    assert not (tmp_path / "o").exists()

    with pytest.raises(InputError, match=r"wider: weight 'model\.layers\.0\.mlp\..*' has shape"):
        uniform_soup([checkpoints["a"], tmp_path / "wider"])
    with pytest.raises(InputError, match="no .safetensors weights"):
        uniform_soup([checkpoints["a"], tmp_path])


def test_greedy_soups_are_scored_on_the_accelerator(
    checkpoints: dict[str, Path], heldout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auto` puts the scoring model on the GPU when one is visible (simulated here: the
    placement asked of the loader is recorded, the weights load on the host), in float32;
    `cpu` keeps it on the host."""
    from evalharness.backends import hf

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    asked: list[tuple[str, str]] = []
    real_load = hf.load_pretrained

    def load(spec: Any, directory: Path, model_class: Any, placement: Any = None) -> Any:
        asked.append((placement.device_name, placement.dtype))
        return real_load(spec, directory, model_class, hf.Placement("cpu", placement.dtype))

    monkeypatch.setattr(hf, "load_pretrained", load)
    monkeypatch.setattr(torch.nn.Module, "to", lambda module, *a, **k: module)
    scorer = HeldoutLikelihood(heldout, checkpoints["a"])
    assert scorer.device.type == "cuda" and asked == [("cuda:0", "float32")]
    assert next(scorer.model.parameters()).dtype == torch.float32
    assert HeldoutLikelihood(heldout, checkpoints["a"], device="cpu").device.type == "cpu"
