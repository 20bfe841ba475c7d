"""evalharness: train language models with any alignment method, evaluate them on judged tasks.

The engine lives here (CLI, model specs, backends, run store, runner); task families, judges,
trainers, kernels and reports are sub-packages installed from the top-level folders of the repo.
"""

__version__ = "0.1.0"
