"""evalharness: train language models with any alignment method, evaluate them on judged tasks.

The engine lives here (CLI, model specs, backends, run store, runner); task families, judges,
trainers, kernels and reports are sub-packages installed from the top-level folders of the repo.

Those folders (`tasks/`, `judges/`, `trainers/`, `kernels/`, `reports/`) deliberately have no
`__init__.py`. Python puts the current directory first on `sys.path` for `python -m`,
`python -c`, notebooks, Ray and `accelerate` workers; a regular package there named `kernels`
would hide the installed PyPI distribution of that name (transformers imports it). A folder
without `__init__.py` is only a namespace portion, and an installed regular package of the same
name always wins over it, whatever the working directory. A wheel installs them under
`evalharness/`; in a source checkout (editable install, or the repo root as working directory)
the loop below lets `evalharness.kernels` find `kernels/` beside this folder, which setuptools'
editable finder does not do for a namespace sub-package.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_PACKAGE_DIR = _Path(__file__).resolve().parent
if not (_PACKAGE_DIR / "tasks").is_dir() and (_PACKAGE_DIR.parent / "pyproject.toml").is_file():
    __path__.append(str(_PACKAGE_DIR.parent))  # noqa: F821 (a package's __path__)

#: The Python API, imported on first use so `import evalharness` (and the CLI) stays light.
_API = {
    "evaluate": "evalharness.engine.api",
    "compare": "evalharness.engine.api",
    "Results": "evalharness.engine.api",
    "ResultFrames": "evalharness.engine.api",
    "EvalCallback": "evalharness.engine.callback",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'evalharness' has no attribute {name!r}")
