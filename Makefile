# Two commands on a fresh machine:  make demo   |   make test
# Setup is idempotent: it reinstalls only when pyproject.toml or requirements-lava.txt change.

SHELL := /bin/bash
PY311 ?= $(shell command -v python3.11 2>/dev/null || ls -d $$HOME/.pyenv/versions/3.11*/bin/python 2>/dev/null | tail -n 1)
PY310 ?= $(shell ls -d $$HOME/.pyenv/versions/3.10*/bin/python 2>/dev/null | tail -n 1 || command -v python3.10 2>/dev/null)
VENV := .venv
LAVA_VENV := .venv-lava
PEERS_VENV := .venv-peers
STAMP := $(VENV)/.neurohil-setup
LAVA_STAMP := $(LAVA_VENV)/.neurohil-setup

PYTEST_ARGS ?= -q -n 2

.PHONY: setup setup-main setup-lava setup-peers demo test lint clean info

setup: setup-main setup-lava

setup-main: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -z "$(PY311)" ]; then echo "setup: Python 3.11 not found (install it, e.g. pyenv install 3.11)"; exit 1; fi
	@echo "setup: creating $(VENV) with $(PY311) (torch 2.13.0 CPU, snntorch, norse, nir, pyserial, ...)"
	@[ -x $(VENV)/bin/python ] || $(PY311) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
	@$(VENV)/bin/python -c "import torch, snntorch, norse, nir, serial, neuro" || { echo "setup: the main environment is incomplete; see the pip output above"; exit 1; }
	@touch $(STAMP)

setup-lava: $(LAVA_STAMP)

$(LAVA_STAMP): requirements-lava.txt
	@if [ -z "$(PY310)" ]; then echo "setup: no Python 3.10 found (pyenv install 3.10), so the Lava backend is unavailable; everything else works"; exit 0; fi; \
	echo "setup: creating $(LAVA_VENV) with $(PY310) (lava-nc, numpy<2)"; \
	{ [ -x $(LAVA_VENV)/bin/python ] || $(PY310) -m venv $(LAVA_VENV); } && \
	$(LAVA_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-lava.txt 2>&1 | grep -v "^WARNING: Location"; \
	if $(LAVA_VENV)/bin/python -c "import lava.magma" 2>/dev/null; then touch $(LAVA_STAMP); \
	else echo "setup: lava-nc did not install in $(LAVA_VENV); the Lava backend is unavailable; everything else works"; fi

# Photonic peers (torchonn, neurophox) for bench/photonic_peers.py only; not part of setup or test.  torch is
# pinned (also as a constraint) to the main environment's 2.13.0 CPU build from the same install source.
# torchonn 0.0.8: its setup.py imports torchonn, which imports mmcv (mmcv-lite: no compiled ops) and torchvision
# (the index's torchvision is a CUDA build that cannot load against CPU torch: bench/peer_standins stands in),
# so it is built without isolation and without dependency resolution.  A peer that does not install is reported.
PEERS_PIP = $(PEERS_VENV)/bin/pip install -q --disable-pip-version-check -c $(PEERS_VENV)/constraints.txt
setup-peers:
	@if [ -z "$(PY311)" ]; then echo "setup-peers: Python 3.11 not found"; exit 1; fi
	@[ -x $(PEERS_VENV)/bin/python ] || $(PY311) -m venv $(PEERS_VENV)
	@echo "torch==2.13.0" > $(PEERS_VENV)/constraints.txt
	@$(PEERS_PIP) torch==2.13.0 numpy scipy setuptools wheel mmengine mmcv-lite torchonn-pyutils 2>&1 | grep -v "^WARNING: Location" || true
	@PYTHONPATH=bench/peer_standins $(PEERS_PIP) --no-build-isolation --no-deps torchonn 2>&1 | grep -v "^WARNING: Location" || true
	@$(PEERS_PIP) neurophox 2>&1 | grep -v "^WARNING: Location" || true
	@PYTHONPATH=. $(PEERS_VENV)/bin/python -m bench.photonic_peers --check-imports 2>&1 | grep "^# peers"

# glibc malloc settings that cut page faults in BPTT (see ../shared/PERFORMANCE_NOTES.md)
demo: setup
	@MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 $(VENV)/bin/neuro demo

test: setup
	@$(VENV)/bin/ruff check . && echo "ruff: clean"
	@$(VENV)/bin/python -c "from simulators import lif_kernel; lif_kernel.kernel()"  # build the LIF kernel once, before parallel tests
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup-main
	@$(VENV)/bin/ruff check .

info: setup
	@$(VENV)/bin/neuro info

clean:
	rm -rf $(VENV) $(LAVA_VENV) $(PEERS_VENV) runs .pytest_cache
