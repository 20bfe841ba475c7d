"""TrueMatch: can a model describe an item precisely enough for a frozen retriever to find it?

Each sample is one item of a bag of near-duplicates (see `generator`). The model sees only that
item, rendered as data (JSON), and writes a description of at most `word_budget` words. A frozen
retriever (see `retrievers`) ranks the bag's gallery texts, a different rendering (English
sentences), by the description; the model scores when its own item comes first. No judge: the
retriever is the referee, and it is recorded (name + weights hash, or "bm25-bigram" and its
parameters) in the task's settings and folded into the data hash, so a different retriever is
a different run.

Retriever (`retriever=`): `bm25` (default) or `minilm`; `clip` for images. BM25 is the default
because it needs no model files, loads instantly, scores exactly (bit-reproducible, so ties are
real ties and the constant baseline is exactly chance) and is transparent about why it ranked an
item first; MiniLM forgives paraphrase ("crimson disc" for "red circle") at the cost of a model
load and float scores.

Word budget: the description is cut to its first `word_budget` whitespace-separated words before
retrieval (punctuation stays attached; "top-left" is one word), so a model cannot buy precision
with length. Every sample's stored scores hold the truncated description, the words the model
wrote, whether it was cut, its rank, R@1 credit, tie count and the baselines' credits.

Bags: generated from the run seed (`--seed`), `bags` per size in `bag_sizes`, after a
separability filter: a bag is kept only when, for every item, the item's own gallery text used as
the description ranks it first strictly. A bag even a perfect description cannot solve measures
the retriever, not the model. Samples are ordered bag by bag, sizes interleaved (one bag of each
size, then the next), so `--limit N` keeps the first N samples: whole bags of every size first,
then part of the next bag (a partial bag still ranks against its full gallery).

Metrics (tie handling in `retrievers.Ranking`):
- `r_at_1`: mean R@1 credit; a tie at the top earns 1/#tied. `r_at_1_bag{B}` per bag size.
- `mean_rank`: tied items share the mean of their positions.
- `all_correct_bag_rate`: share of bags, among those whose every item is in the run, where every
  item got full credit (rank 1, no tie); None when no bag is complete.
- baselines beside them: `chance` (mean 1/B), `oracle_r_at_1` (gallery text as the description:
  1.0 after the filter), `generic_r_at_1` (a constant description; over complete bags this is
  exactly `chance` whatever the retriever, because the top-tied items of a bag share one unit).
  The oracle is not truncated (it measures what the retriever can separate); a generated
  gallery sentence has at most 25 words anyway, so it fits the default budget.
- `truncated_rate`: share of descriptions cut at the budget.
- CIs (`ci_method` names each): `r_at_1` and each `r_at_1_bag{B}` are rates, with the Wilson
  score interval clustered by bag (samples of one bag share a gallery, so they are not
  independent; a split tie credit lies in [0, 1], where the interval stays conservative);
  `all_correct_bag_rate` the Wilson interval over complete bags; `mean_rank` a bootstrap
  (seeded with the run seed) over samples, somewhat narrow for the same reason.

Image variant (`images=PATH`, `captions=PATH`, see `images`): bags of user images; the model reads
the target's caption, CLIP (`clip=PATH_OR_HUB_ID`) ranks the images; the caption is the oracle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalharness.engine.requests import Request
from evalharness.errors import InputError
from evalharness.stats.intervals import Intervals, mean

from ..base import Outcome, Sample, Task, TaskData, TaskResult
from ..common import greedy_chat, json_sha256
from ..registry import register_task
from ..signatures import Responses, Stored, StoredSlots, Verdicts
from ..views import SampleView
from .generator import (
    ATTRIBUTES,
    GENERATOR_VERSION,
    N_OBJECTS,
    bag_stream,
    gallery_text,
    model_text,
)
from .images import content_hash, load_captions, load_image_bags
from .retrievers import DEFAULT_CLIP, RETRIEVERS, Retriever, build_retriever, rank_of, separable

OPTIONS = (
    "bags",
    "bag_sizes",
    "word_budget",
    "retriever",
    "max_edits",
    "max_new_tokens",
    "images",
    "captions",
    "clip",
)
GENERATOR_OPTIONS = ("bags", "bag_sizes", "max_edits")
DEFAULT_BAGS = 20
DEFAULT_BAG_SIZES = (3, 5, 7)
DEFAULT_WORD_BUDGET = 25
DEFAULT_MAX_EDITS = 2
#: Constant descriptions for the generic baseline: no bigram in common with any gallery text.
GENERIC = {"text": "an object", "image": "a picture"}
#: Generated bags examined per kept bag before giving up (the filter rarely drops any).
MAX_DRAWS_PER_BAG = 20

# The phrase pattern has placeholders, not values: a concrete example gets parroted by weak models
# and then matches whichever item happens to share its values.
TEXT_PROMPT = (
    "Here is a scene, given as data:\n\n{item}\n\n"
    "Describe this scene in plain English (not JSON) in at most {budget} words, so that someone "
    "could pick it out from a set of nearly identical scenes, in phrases like 'a <size> <color> "
    "<shape> at the <position>'. Words after the first {budget} are cut off. "
    "Reply with the description only."
)
IMAGE_PROMPT = (
    "Here is a caption of a picture:\n\n{item}\n\n"
    "Describe the picture in plain English in at most {budget} words, so that someone could "
    "pick it out from a set of very similar pictures. Words after the first {budget} are cut "
    "off. Reply with the description only."
)


def truncate_words(text: str, budget: int) -> tuple[str, int]:
    """(first `budget` whitespace-separated words joined by single spaces, words written)."""
    words = text.split()
    return " ".join(words[:budget]), len(words)


def _int_option(options: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"truematch.{key} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise InputError(f"truematch.{key} must be in {low}..{high}, got {value}")
    return value


def _bag_sizes(raw: str | None) -> tuple[int, ...]:
    if raw is None:
        return DEFAULT_BAG_SIZES
    try:
        sizes = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise InputError(f"truematch.bag_sizes must be comma-separated integers: {raw!r}") from None
    if not sizes or any(s < 2 for s in sizes) or len(set(sizes)) != len(sizes):
        raise InputError(f"truematch.bag_sizes needs distinct sizes >= 2, got {raw!r}")
    return sizes


@register_task
class TrueMatch(Task):
    name = "truematch"
    description = "Describe an item within a word budget so a frozen retriever picks it from a bag"
    needs_judge = False

    headline = ("r_at_1",)

    @classmethod
    def outcomes(cls, scores: Mapping[str, Any], settings: Mapping[str, Any]) -> list[Outcome]:
        """Retrieval credit (fractional on ties) and rank of the model's own description."""
        credit = float(scores["r_at_1"])
        return [
            Outcome("r_at_1", credit),
            Outcome(f"r_at_1_bag{scores['bag_size']}", credit),
            Outcome("mean_rank", float(scores["rank"]), higher_is_better=False),
        ]

    @classmethod
    def present(
        cls, data: Stored, scores: Stored | None, responses: StoredSlots, verdicts: StoredSlots
    ) -> SampleView:
        gallery = [str(g) for g in data.get("gallery", [])]
        target = data.get("target")
        scores = scores or {}
        retrieval = []
        if "rank" in scores:
            listing = "\n".join(
                f"{'*' if i == target else ' '} {i}: {text}" for i, text in enumerate(gallery)
            )
            retrieval = [
                {
                    "slot": "retrieval",
                    "verdict": f"rank {scores['rank']} of {len(gallery)}",
                    "score": scores.get("r_at_1"),
                    "rationale": f"gallery (* = the described item):\n{listing}",
                }
            ]
        return SampleView(
            prompt=[str(data.get("model_text", ""))],
            responses={slot: str(result.get("text", "")) for slot, result in responses.items()},
            reference=gallery[target]
            if isinstance(target, int) and target < len(gallery)
            else None,
            verdicts=retrieval,
            score=scores.get("r_at_1"),
            tags={"bag_size": str(data.get("bag_size", ""))},
        )

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.check_options(OPTIONS)
        opts = self.options
        self.images = opts.get("images")
        self.captions = opts.get("captions")
        if bool(self.images) != bool(self.captions):
            raise InputError("truematch.images and truematch.captions go together")
        self.variant = "image" if self.images else "text"
        if self.images:
            given = [k for k in GENERATOR_OPTIONS if k in opts]
            if given:
                raise InputError(f"truematch.{given[0]} applies to generated scenes, not images=")
        self.retriever_name = self.choice_option(
            "retriever", RETRIEVERS, "clip" if self.images else "bm25"
        )
        if (self.retriever_name == "clip") != bool(self.images):
            raise InputError(
                "truematch.retriever=clip ranks images: it needs images=PATH, and images need it"
            )
        if "clip" in opts and not self.images:
            raise InputError("truematch.clip applies to the image variant (images=PATH)")
        self.clip_source = opts.get("clip", DEFAULT_CLIP)
        self.bags = _int_option(opts, "bags", DEFAULT_BAGS, 1, 100_000)
        self.bag_sizes = _bag_sizes(opts.get("bag_sizes"))
        self.word_budget = _int_option(opts, "word_budget", DEFAULT_WORD_BUDGET, 1, 10_000)
        self.max_edits = _int_option(
            opts, "max_edits", DEFAULT_MAX_EDITS, 1, N_OBJECTS * len(ATTRIBUTES)
        )
        # Room for the budget in words (~1.3 tokens each) plus a preamble the model may add.
        self.max_new_tokens = _int_option(
            opts, "max_new_tokens", 2 * self.word_budget + 16, 1, 100_000
        )
        self.retriever: Retriever | None = None
        self.dropped: dict[str, int] = {}

    # -- data ----------------------------------------------------------------------------
    def _get_retriever(self) -> Retriever:
        if self.retriever is None:
            self.retriever = build_retriever(self.retriever_name, self.clip_source)
        return self.retriever

    def _text_bags(self, retriever: Retriever) -> list[dict[str, Any]]:
        """`bags` separable bags per size, interleaved by size."""
        per_size: dict[int, list[dict[str, Any]]] = {}
        for size in self.bag_sizes:
            kept: list[dict[str, Any]] = []
            stream = bag_stream(self.seed, size, self.max_edits)
            draws = 0
            while len(kept) < self.bags:
                if draws >= MAX_DRAWS_PER_BAG * self.bags:
                    raise InputError(
                        f"truematch: only {len(kept)} of {self.bags} bags of size {size} are "
                        f"separable by {retriever.identity['name']} after {draws} draws"
                    )
                bag = next(stream)
                draws += 1
                gallery = [gallery_text(scene) for scene in bag.scenes]
                if not separable(retriever, gallery, gallery):
                    continue
                kept.append(
                    {
                        "bag": f"n{size}-b{len(kept):03d}",
                        "gallery": gallery,
                        "model_texts": [model_text(scene) for scene in bag.scenes],
                        "oracles": gallery,
                        "edits": list(bag.edits),
                    }
                )
            per_size[size] = kept
            self.dropped[str(size)] = draws - len(kept)
        return [per_size[size][k] for k in range(self.bags) for size in self.bag_sizes]

    def _image_bags(self, retriever: Retriever) -> tuple[list[dict[str, Any]], list[Any]]:
        bags = load_image_bags(Path(self.images))  # type: ignore[arg-type]
        captions = load_captions(Path(self.captions))  # type: ignore[arg-type]
        for bag in bags:
            missing = [p for p in bag.images if p not in captions]
            if missing:
                raise InputError(f"{self.captions}: no caption for {missing[0]}")
        kept, dropped = [], 0
        for bag in bags:
            gallery = list(bag.images)
            oracles = [captions[p] for p in gallery]
            if not separable(retriever, gallery, oracles):
                dropped += 1
                continue
            kept.append(
                {
                    "bag": bag.bag_id,
                    "gallery": gallery,
                    "model_texts": oracles,
                    "oracles": oracles,
                    "edits": None,
                }
            )
        self.dropped = {"all": dropped}
        if not kept:
            raise InputError(
                f"truematch: no bag in {self.images} is separable by CLIP from its captions"
            )
        return kept, content_hash(bags, captions)

    def load(self, limit: int | None = None) -> TaskData:
        retriever = self._get_retriever()
        if self.variant == "image":
            bags, content = self._image_bags(retriever)
            source = f"images:{self.images} captions:{self.captions}"
        else:
            bags = self._text_bags(retriever)
            content = bags
            source = f"generated:{GENERATOR_VERSION}"
        samples = []
        for bag in bags:
            size = len(bag["gallery"])
            for j, text in enumerate(bag["model_texts"]):
                digest = json_sha256([text, bag["gallery"]])[:8]
                data = {
                    "variant": self.variant,
                    "bag": bag["bag"],
                    "bag_size": size,
                    "target": j,
                    "model_text": text,
                    "gallery": bag["gallery"],
                    "oracle": bag["oracles"][j],
                    "edits": bag["edits"][j] if bag["edits"] is not None else None,
                }
                samples.append(Sample(id=f"{bag['bag']}-i{j}-{digest}", data=data))
        # The retriever decides every score, so it is part of what the data hash names.
        data_hash = json_sha256({"bags": content, "retriever": retriever.identity})
        if limit is not None:
            samples = samples[:limit]
        settings = {
            "retriever": retriever.identity,
            "word_budget": self.word_budget,
            "truncation": "first word_budget whitespace-separated words",
            "max_new_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "generic_description": GENERIC[self.variant],
            "dropped_inseparable": dict(self.dropped),
        }
        if self.variant == "text":
            settings.update(
                generator=GENERATOR_VERSION,
                bags_per_size=self.bags,
                bag_sizes=list(self.bag_sizes),
                max_edits=self.max_edits,
            )
        return TaskData(samples=samples, data_hash=data_hash, source=source, settings=settings)

    # -- model work ------------------------------------------------------------------------
    def prompt(self, sample: Sample) -> str:
        template = TEXT_PROMPT if sample.data["variant"] == "text" else IMAGE_PROMPT
        return template.format(item=sample.data["model_text"], budget=self.word_budget)

    def requests(self, sample: Sample, responses: Responses) -> dict[str, Request]:
        return {"description": greedy_chat(self.prompt(sample), self.max_new_tokens)}

    # -- scores ----------------------------------------------------------------------------
    def score(self, sample: Sample, responses: Responses, verdicts: Verdicts) -> dict[str, Any]:
        retriever = self._get_retriever()
        gallery, target = sample.data["gallery"], sample.data["target"]
        written = responses["description"].text  # type: ignore[union-attr]
        description, n_words = truncate_words(written, self.word_budget)
        model = rank_of(retriever.scores(description, gallery), target)
        oracle = rank_of(retriever.scores(sample.data["oracle"], gallery), target)
        generic = rank_of(retriever.scores(GENERIC[sample.data["variant"]], gallery), target)
        return {
            "bag": sample.data["bag"],
            "bag_size": sample.data["bag_size"],
            "description": description,
            "words": n_words,
            "truncated": n_words > self.word_budget,
            "r_at_1": model.credit,
            "rank": model.rank,
            "tied": model.tied,
            "oracle_r_at_1": oracle.credit,
            "generic_r_at_1": generic.credit,
            "chance": 1.0 / sample.data["bag_size"],
        }

    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        if not scores:
            return TaskResult(metrics={}, failures=0)
        credits = [s["r_at_1"] for s in scores]
        ranks = [s["rank"] for s in scores]
        metrics: dict[str, Any] = {"r_at_1": mean(credits)}
        intervals = Intervals(seed=self.seed)
        intervals.mean("r_at_1", credits, rate=True, clusters=[s["bag"] for s in scores])
        intervals.mean("mean_rank", ranks, rate=False)
        for size in sorted({s["bag_size"] for s in scores}):
            subset = [s for s in scores if s["bag_size"] == size]
            bag_credits = [s["r_at_1"] for s in subset]
            name = f"r_at_1_bag{size}"
            metrics[name] = mean(bag_credits)
            intervals.mean(name, bag_credits, rate=True, clusters=[s["bag"] for s in subset])
        metrics["mean_rank"] = mean(ranks)
        by_bag: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in scores:
            by_bag[s["bag"]].append(s)
        complete = [rows for rows in by_bag.values() if len(rows) == rows[0]["bag_size"]]
        solved = [float(all(r["r_at_1"] == 1.0 for r in rows)) for rows in complete]
        metrics["all_correct_bag_rate"] = mean(solved)  # None when no bag is complete
        intervals.mean("all_correct_bag_rate", solved, rate=True)
        metrics["chance"] = mean([s["chance"] for s in scores])
        metrics["oracle_r_at_1"] = mean([s["oracle_r_at_1"] for s in scores])
        metrics["generic_r_at_1"] = mean([s["generic_r_at_1"] for s in scores])
        metrics["truncated_rate"] = mean([float(s["truncated"]) for s in scores])
        return TaskResult(
            metrics=metrics,
            failures=0,
            ci=intervals.ci,
            ci_method=intervals.method,
            counts={
                "samples": len(scores),
                "bags": len(by_bag),
                "complete_bags": len(complete),
                "truncated": sum(s["truncated"] for s in scores),
            },
        )
