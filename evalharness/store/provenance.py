"""What a result depends on, recorded with every run so two runs can be compared honestly."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from collections.abc import Sequence
from typing import Any

PACKAGES = ("evalharness", "torch", "transformers", "tokenizers", "datasets", "openai", "numpy")


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in `names` (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def collect(
    *,
    model_identity: dict[str, Any],
    judge_identity: dict[str, Any] | None,
    tasks: dict[str, dict[str, Any]],
    seed: int,
    argv: list[str] | None = None,
    model_records: dict[str, Any] | None = None,
    devices: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`model_records`: `Backend.recorded_metadata()`, kept only when there is any.
    `devices`: where the model (and a local judge) ran: device, resolved dtype, device map and
    card (`evalharness.backends.devices.describe`). Not part of the identity: the same run on
    another card has the same id, and this says which card answered last."""
    collected = {
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "model": model_identity,
        "chat_template_sha256": model_identity.get("chat_template_sha256"),
        "judge": judge_identity,
        "tasks": tasks,
        "seed": seed,
        "argv": argv if argv is not None else sys.argv[1:],
    }
    if model_records:
        collected["model_records"] = model_records
    if devices:
        collected["devices"] = devices
    return collected
