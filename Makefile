# The two entry points of the README. Each creates .venv (if missing) and installs what it needs,
# so both work on a fresh machine. TORCH pins the CUDA build of torch that can compile csrc/.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: bench test lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH)"

# Main job: install and run the microbenchmarks on this machine's paths (CPU here).
bench: $(PY)
	$(PIP) install -q --no-build-isolation -e ".[bench]"
	$(VENV)/bin/fiber-fast bench --quick

# Tests: the default run (markers "slow" and "gpu" deselected; see pyproject.toml).
test: $(PY)
	$(PIP) install -q --no-build-isolation -e ".[test]"
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(PY)
	$(VENV)/bin/ruff check kernels fiber_fast bench tests setup.py
