# One command per chore. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q -c constraints.txt
PLUGINS := -e plugins/cnnkit-distance-pool -e plugins/cnnkit-tiny-backend

.PHONY: train test lint format bench bench-quick conformance clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

train: $(BIN)/python  ## the main job: train the digits CNN on the NumPy backend
	$(PIP) -e '.[torch,plot]'
	$(BIN)/cnnkit train

test: $(BIN)/python  ## the whole test suite, in parallel
	$(PIP) -e '.[torch,plot,data,test]' $(PLUGINS)
	$(BIN)/python -m pytest -n 2

conformance: $(BIN)/python  ## the op x backend matrix
	$(PIP) -e '.[torch]' $(PLUGINS)
	$(BIN)/cnnkit conformance --xfail tests/conformance_xfail.txt

lint: $(BIN)/python
	$(PIP) -e '.[dev]'
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/python
	$(PIP) -e '.[dev]'
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/python  ## speed table: NumPy vs PyTorch backend vs PyTorch native
	$(PIP) -e '.[torch]'
	$(BIN)/python -m benchmarks.run

bench-quick: $(BIN)/python
	$(PIP) -e '.[torch]'
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .ruff_cache
