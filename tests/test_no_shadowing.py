"""No folder of the checkout hides an installed distribution, in any process the project starts.

Python puts the working directory first on `sys.path` for `python -m`, `python -c`, notebooks
and the workers Ray and `accelerate` start, so a regular package at the repository root named
like a PyPI distribution (`kernels/` and Hugging Face's `kernels`, which transformers imports)
would shadow it. Every check here runs with the repository root as the working directory, in a
fresh interpreter, as a user or CI would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import cli_env, tiny_run_args

ROOT = Path(__file__).resolve().parents[1]
#: Folders of the checkout that are packages on purpose: the engine itself.
OWN_PACKAGES = {"evalharness"}


def top_level_folders() -> list[str]:
    return sorted(
        path.name
        for path in ROOT.iterdir()
        if path.is_dir()
        and path.name.isidentifier()
        and not path.name.startswith((".", "_"))
        and path.name not in OWN_PACKAGES
    )


def run_at_root(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python ARGV…` started from the repository root, with no PYTHONSAFEPATH to help."""
    env = cli_env()
    env.pop("PYTHONSAFEPATH", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_layout_folders_are_there() -> None:
    # The checks below would pass vacuously if the folders moved.
    assert {"tasks", "judges", "trainers", "kernels", "reports", "tests"} <= set(
        top_level_folders()
    )


def test_no_top_level_folder_resolves_as_a_package_from_the_root() -> None:
    """From the root, `import NAME` for a folder name is an installed package or nothing.

    A namespace portion (a folder without `__init__.py`) is fine: any installed regular package
    of the same name is found before it.
    """
    probe = (
        "import importlib.util, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    found[name] = None if spec is None else spec.origin\n"
        "print(json.dumps(found))\n"
    )
    result = run_at_root("-c", probe, *top_level_folders())
    assert result.returncode == 0, result.stderr
    shadowing = {
        name: origin
        for name, origin in json.loads(result.stdout).items()
        if origin is not None and Path(origin).resolve().is_relative_to(ROOT / name)
    }
    assert not shadowing, f"checkout folders importable as top-level packages: {shadowing}"


def test_installed_kernels_and_transformers_hub_kernels_import_from_the_root() -> None:
    result = run_at_root(
        "-c",
        "import importlib.util, transformers.integrations.hub_kernels\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print(spec.origin if spec else '')\n",
    )
    assert result.returncode == 0, result.stderr
    origin = result.stdout.strip()
    if origin:  # the `kernels` distribution is installed: it must be the one imported
        assert not Path(origin).resolve().is_relative_to(ROOT / "kernels"), origin


def test_cli_version_from_the_root() -> None:
    result = run_at_root("-m", "evalharness", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("evalharness ")


def test_two_ray_workers_started_from_the_root(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Ray workers get the driver's working directory on their `sys.path`."""
    pytest.importorskip("ray")
    store = tmp_path / "runs.sqlite"
    args = tiny_run_args(tiny_model_dir, store, "--limit", "2", "--workers", "2", "--json")
    result = run_at_root("-m", "evalharness", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout)["tasks"]["mt_bench"]["n"] == 2


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """pyproject lists packages by name, so a new sub-package missing there is left out of the
    wheel while an editable install (the tests) still finds it: list every folder with code."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    roots = {"evalharness": ROOT / "evalharness"}
    roots.update({name: ROOT / path for name, path in setuptools["package-dir"].items()})
    found = set()
    for name, folder in roots.items():
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and any(path.glob("*.py")) and "__pycache__" not in path.parts:
                relative = path.relative_to(folder).parts
                found.add(".".join((name, *relative)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
