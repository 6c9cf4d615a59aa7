# One command sets up and runs the demo (`make demo`), one the full test suite (`make test`).
# A fresh machine needs only Python 3.11 and pip.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	# torch first and pinned: the CPU wheel on these machines (a bare `torch` pulls a CUDA build).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,distributed]"
	# Test-only: rt-utils 1.2.7 writes third-party RTSTRUCTs for the round-trip tests. --no-deps because it
	# requires the GUI opencv-python, which would shadow opencv-python-headless (cv2 is already installed).
	$(BIN)/python -m pip install --quiet --no-deps rt-utils==1.2.7
	# The optimizer extra's planner, without its LLM client stack (see pyproject.toml [optimizer]).
	$(BIN)/python -m pip install --quiet --no-deps pyradplan==0.5.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/radiogenomics demo --out demo

lint: install
	$(BIN)/ruff check radiogenomics tests benchmarks notebooks

typecheck: install
	$(BIN)/mypy radiogenomics

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
