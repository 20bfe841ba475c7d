"""The image variant's inputs: user-supplied bags of images and a caption per image.

Describing images needs a vision-language model, which this task does not drive; instead the
evaluated (text) model reads the target's caption from `captions=PATH` and writes the
budgeted description, and CLIP ranks the bag's images by it.

- Bag file (`images=PATH`): JSONL (or a JSON list), one bag per row:
  `{"bag": "kitchen-1", "images": ["a.png", "b.png", "c.png"]}`. Paths are relative to the bag
  file's folder; a bag needs at least two images.
- Captions (`captions=PATH`): a JSON object `{"a.png": "caption", ...}`, or records (JSONL,
  JSON list, CSV) with `image` and `caption`. Paths are relative to the captions file's folder.

Images are `.npy` arrays (H x W x 3, uint8) read with numpy, or any format Pillow reads when
Pillow is installed (it is not a dependency of evalharness).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds, read_records, read_text, require
from evalharness.store.hashing import sha256_file


@dataclass(frozen=True)
class ImageBag:
    bag_id: str
    images: tuple[str, ...]  # resolved absolute paths


def _resolve(base: Path, name: str) -> str:
    return str((base / Path(name).expanduser()).resolve())


def load_image_bags(path: Path) -> list[ImageBag]:
    """Bags in file order; every image must exist and be unique within its bag."""
    bags, ids = [], UniqueIds("bag")
    for where, row in read_records(path):
        bag_id = str(require(where, row, "bag"))
        names = require(where, row, "images", list)
        if len(names) < 2:
            raise InputError(f"{where}: a bag needs at least two images")
        ids.add(where, bag_id)
        images = tuple(_resolve(path.expanduser().parent, str(n)) for n in names)
        if len(set(images)) != len(images):
            raise InputError(f"{where}: bag {bag_id!r} lists an image twice")
        for image in images:
            if not Path(image).is_file():
                raise InputError(f"{where}: no such image {image}")
        bags.append(ImageBag(bag_id, images))
    if not bags:
        raise InputError(f"{path}: no bags")
    return bags


def load_captions(path: Path) -> dict[str, str]:
    """Resolved image path -> caption."""
    path = path.expanduser()
    base = path.parent
    text = read_text(path)
    if text.lstrip().startswith("{") and path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        return {_resolve(base, str(k)): str(v) for k, v in mapping.items()}
    return {
        _resolve(base, str(require(where, row, "image"))): str(require(where, row, "caption"))
        for where, row in read_records(path)
    }


def read_image(path: str) -> Any:
    """An H x W x 3 uint8 array."""
    import numpy as np

    if path.endswith(".npy"):
        array = np.load(path, allow_pickle=False)
    else:
        try:
            from PIL import Image
        except ImportError:
            raise InputError(
                f"{path}: reading this image format needs Pillow (pip install pillow), "
                "or give .npy arrays (H x W x 3, uint8)"
            ) from None
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise InputError(f"{path}: expected an H x W x 3 image, got shape {tuple(array.shape)}")
    return array.astype(np.uint8)


def content_hash(bags: list[ImageBag], captions: dict[str, str]) -> list[Any]:
    """What the image data hash covers: bag structure, image bytes and captions."""
    return [[bag.bag_id, [[sha256_file(Path(p)), captions[p]] for p in bag.images]] for bag in bags]
