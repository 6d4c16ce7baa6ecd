# The two commands of the README: `make demo` and `make test`. Each bootstraps .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA := data/demo
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Run the demo sweep end to end on the bundled real photos (about 5 minutes on 2 cores).
demo: $(STAMP)
	@test -f $(DEMO_DATA)/README.md || $(BIN)/lossyvision demo-data $(DEMO_DATA)
	$(BIN)/lossyvision sweep run sweeps/demo.yaml
	@echo "lossyvision is in $(BIN)/: run 'source $(BIN)/activate' to put it on your PATH (then: lossyvision --help)"

## All tests: fast unit tests, then the Ray end-to-end tiers.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Only the fast unit tests (no Ray, no slow end-to-end runs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not ray and not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs data .pytest_cache
