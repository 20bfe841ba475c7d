"""Seeded bags of near-duplicate scenes, and the two renderings of each scene.

A scene is a few objects on a 3x3 grid, each with a colour, shape, size and position. A bag is one
base scene plus variants that differ from it by 1..`max_edits` attribute edits (an edit changes one
attribute of one object to another value; a position edit moves the object to a free cell), in a
seeded random order. Items that differ in one attribute are what makes the task hard: a
description must carry the detail that singles out its scene, not just the gist.

Each scene has two renderings on purpose:
- `model_text`, what the evaluated model sees: JSON with keys, hyphenated positions, objects in
  generation order;
- `gallery_text`, what the retriever indexes: one English sentence, objects in reading order
  (top-left first).
So copying the input verbatim never reproduces the gallery text; the model has to describe.

Everything is a pure function of the seed: one `random.Random` stream per bag size, so asking for
more bags appends bags without changing the earlier ones.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond")
SIZES = ("small", "medium", "large")
# Reading order (top-left first). The centre cell is "middle", not "center"/"centre", so that a
# spelling convention never decides a retrieval.
POSITIONS = (
    "top left",
    "top middle",
    "top right",
    "middle left",
    "middle",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
)
ATTRIBUTES = ("color", "shape", "size", "position")
N_OBJECTS = 3
#: Bumped whenever generation or rendering changes, so the data hash (and the run id) changes.
GENERATOR_VERSION = "scenes-v1"
#: Attempts at a variant that differs from every item already in the bag before giving up (the
#: separability filter then drops the bag).
_DISTINCT_ATTEMPTS = 50


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    size: str
    position: str


Scene = tuple[SceneObject, ...]


@dataclass(frozen=True)
class Bag:
    """Near-duplicate scenes; `edits[i]` counts item i's edits from the base (0: the base)."""

    size: int
    index: int
    scenes: tuple[Scene, ...]
    edits: tuple[int, ...]

    @property
    def bag_id(self) -> str:
        return f"n{self.size}-b{self.index:03d}"


def random_scene(rng: random.Random, n_objects: int = N_OBJECTS) -> Scene:
    """Objects in distinct cells with distinct (colour, shape) pairs, so each is nameable."""
    cells = rng.sample(POSITIONS, n_objects)
    kinds = rng.sample([(c, s) for c in COLORS for s in SHAPES], n_objects)
    return tuple(
        SceneObject(color=c, shape=s, size=rng.choice(SIZES), position=p)
        for (c, s), p in zip(kinds, cells, strict=True)
    )


def count_edits(base: Scene, variant: Scene) -> int:
    """Attribute edits between two scenes, objects matched by index (their identity)."""
    return sum(
        getattr(a, attr) != getattr(b, attr)
        for a, b in zip(base, variant, strict=True)
        for attr in ATTRIBUTES
    )


def mutate(rng: random.Random, base: Scene, n_edits: int) -> Scene:
    """Exactly `n_edits` edits: distinct (object, attribute) pairs, each to a new value."""
    pairs = [(i, attr) for i in range(len(base)) for attr in ATTRIBUTES]
    objects = list(base)
    for i, attr in rng.sample(pairs, n_edits):
        if attr == "position":
            taken = {o.position for o in objects}
            choices = [p for p in POSITIONS if p not in taken]
        else:
            pool = {"color": COLORS, "shape": SHAPES, "size": SIZES}[attr]
            choices = [v for v in pool if v != getattr(base[i], attr)]
        objects[i] = replace(objects[i], **{attr: rng.choice(choices)})
    return tuple(objects)


def make_bag(rng: random.Random, size: int, index: int, max_edits: int) -> Bag:
    """A base scene and `size - 1` variants, distinct where possible, in a random order."""
    base = random_scene(rng)
    scenes, edits = [base], [0]
    seen = {gallery_text(base)}
    while len(scenes) < size:
        for _ in range(_DISTINCT_ATTEMPTS):
            n_edits = rng.randint(1, max_edits)
            variant = mutate(rng, base, n_edits)
            if gallery_text(variant) not in seen:
                break
        seen.add(gallery_text(variant))
        scenes.append(variant)
        edits.append(n_edits)
    order = list(range(size))
    rng.shuffle(order)
    return Bag(size, index, tuple(scenes[i] for i in order), tuple(edits[i] for i in order))


def bag_stream(seed: int, size: int, max_edits: int) -> Iterator[Bag]:
    """Bags of one size, forever, from one seeded stream (independent of the other sizes)."""
    if not 1 <= max_edits <= N_OBJECTS * len(ATTRIBUTES):
        raise ValueError(f"max_edits must be in 1..{N_OBJECTS * len(ATTRIBUTES)}")
    rng = random.Random(f"truematch:{GENERATOR_VERSION}:{seed}:{size}")
    index = 0
    while True:
        yield make_bag(rng, size, index, max_edits)
        index += 1


def generate_bags(seed: int, size: int, count: int, max_edits: int) -> list[Bag]:
    """The first `count` bags of a size (before any filtering)."""
    stream = bag_stream(seed, size, max_edits)
    return [next(stream) for _ in range(count)]


# -- renderings -------------------------------------------------------------------------------
def model_text(scene: Scene) -> str:
    """The model's view: structured, keyed, positions hyphenated, generation order."""
    objects = []
    for obj in scene:
        fields = asdict(obj)
        fields["position"] = obj.position.replace(" ", "-")
        objects.append({k: fields[k] for k in ("shape", "color", "size", "position")})
    rows = ",\n".join(f"  {json.dumps(o)}" for o in objects)
    return '{"objects": [\n' + rows + "\n]}"


def _phrase(obj: SceneObject) -> str:
    where = "in the middle" if obj.position == "middle" else f"at the {obj.position}"
    return f"a {obj.size} {obj.color} {obj.shape} {where}"


def gallery_text(scene: Scene) -> str:
    """The retriever's view: one English sentence, objects in reading order."""
    ordered = sorted(scene, key=lambda o: POSITIONS.index(o.position))
    phrases = [_phrase(o) for o in ordered]
    body = ", ".join(phrases[:-1]) + f" and {phrases[-1]}" if len(phrases) > 1 else phrases[0]
    return body[0].upper() + body[1:] + "."
