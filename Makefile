# README's two commands, and the GPU check:
#   make bench      the benchmark report (quick suite; CPU, and the GPU when one is visible)
#   make test       the whole test suite
#   make gpu-check  on a machine with a GPU: tools/gpu_check.py (see there)
# bench and test first make (or reuse) the virtual environment .venv, install the pinned torch /
# torchvision and convpool with its extras, and build the extension; a second run reuses all of
# it and rebuilds only when a C++/CUDA source or the build files changed. Nothing to set before;
# the explicit steps are in README ("Install by hand").

PYTHON3 ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEPS_STAMP := $(VENV)/.convpool-deps
BUILD_STAMP := $(VENV)/.convpool-build
BUILD_INPUTS := $(shell find csrc -type f) setup.py pyproject.toml tools/cuda_toolkit.py
# Without a visible GPU the CUDA kernels cannot run here: compile them for one architecture
# (sm_90), enough to prove they compile, instead of setup.py's five. TORCH_CUDA_ARCH_LIST, when
# set, wins; with a GPU visible, torch compiles for that GPU.
NO_GPU_ARCH := 9.0
# Extra arguments, e.g. make test PYTEST_ARGS="-x tests/test_conv2d.py"
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help bench test gpu-check
help:
	@sed -n '2,4s/^# *//p' Makefile

$(DEPS_STAMP):
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS) ninja
	@touch $@

# The editable install builds the CUDA emulator too (the tests run the CUDA kernels through it).
$(BUILD_STAMP): $(DEPS_STAMP) $(BUILD_INPUTS)
	@arch="$${TORCH_CUDA_ARCH_LIST:-$$($(PY) -c 'import torch; print("" if torch.cuda.is_available() else "$(NO_GPU_ARCH)")')}"; \
	env $${arch:+TORCH_CUDA_ARCH_LIST=$$arch} $(PY) tools/cuda_toolkit.py && \
	echo "convpool: building the extension (about 3 minutes on 2 idle cores)" && \
	env CONVPOOL_BUILD_EMU=1 $${arch:+TORCH_CUDA_ARCH_LIST=$$arch} \
	  $(PY) -m pip install -q --no-build-isolation -e ".[test,bench,examples]"
	$(PY) -m convpool
	@touch $@

bench: $(BUILD_STAMP)
	$(PY) benchmarks/run.py --quick --device all $(BENCH_ARGS)

# CONVPOOL_REQUIRE_EMU: this build has the emulator, so its suite must run, never skip.
test: $(BUILD_STAMP)
	CONVPOOL_REQUIRE_EMU=1 $(PY) -m pytest $(PYTEST_ARGS)

# The project's venv when there is one; a GPU machine's own torch otherwise. It rebuilds the
# extension for the visible GPU without the emulator, so bench / test rebuild theirs next time.
gpu-check:
	@rm -f $(BUILD_STAMP)
	$(if $(wildcard $(PY)),$(PY),$(PYTHON3)) tools/gpu_check.py $(GPU_CHECK_ARGS)
