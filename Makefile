# The entry points of the README. Each creates .venv (if missing) and installs what it needs,
# so each works on a fresh machine. TORCH pins the CUDA build of torch that can compile csrc/.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo bench test lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH)"

# Main job: synthetic data -> coarse -> fine training under DeepSpeed (2 CPU ranks) -> evaluation,
# table and pictures. DEMO_ARGS go to `fiber-fast demo` (e.g. DEMO_ARGS="--out /tmp/demo").
demo: $(PY)
	$(PIP) install -q --no-build-isolation -e ".[train]"
	$(VENV)/bin/fiber-fast demo $(DEMO_ARGS)

# Microbenchmarks of the kernels on this machine's paths (CPU here).
bench: $(PY)
	$(PIP) install -q --no-build-isolation -e ".[bench]"
	$(VENV)/bin/fiber-fast bench --quick

# Tests: the default run (markers "slow" and "gpu" deselected; see pyproject.toml), with the projects
# the drop-in patchers are compared with (open-flamingo pins an old torch: its package alone, no deps).
test: $(PY)
	$(PIP) install -q --no-build-isolation -e ".[test,drop-in]"
	$(PIP) install -q --no-deps "open-flamingo==2.0.1"
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(PY)
	$(VENV)/bin/ruff check kernels fiber_fast bench tests setup.py
