# The two commands of the README: `make demo` and `make test`. Each bootstraps .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA := data/demo
PYTEST_ARGS ?=

.PHONY: demo test test-all test-fast lint venv bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Run the demo sweep end to end on the bundled real photos (8 trainings: about 3 minutes on 2 cores; 193 s measured).
demo: $(STAMP)
	@test -f $(DEMO_DATA)/README.md || $(BIN)/lossyvision demo-data $(DEMO_DATA)
	$(BIN)/lossyvision sweep run sweeps/demo.yaml
	@echo "lossyvision is in $(BIN)/: run 'source $(BIN)/activate' to put it on your PATH (then: lossyvision --help)"

## The tests CI runs: fast unit tests, then the Ray end-to-end tiers, less the nightly one (under 30 minutes on 2 cores).
## The unit tier runs on two processes (pytest-xdist); the Ray tiers one test at a time (each starts a 2-CPU Ray).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not ray and not slow and not nightly" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "(ray or slow) and not nightly" $(PYTEST_ARGS)

## Every test, the nightly tier included (a sweep run twice, several codecs, killed drivers and workers, three
## nodes losing two, S3 twins of local tests): about 10 minutes more on 2 cores.
test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The layer contracts (pyproject.toml's [tool.importlinter]), ruff's rules and docs/architecture.md's picture of the
## layers (drawn from the contract); .ci/run runs them before the tests.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/python docs/architecture_figure.py --check

## Only the fast unit tests (no Ray, no slow end-to-end runs), on two processes: about 2 minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not ray and not slow and not nightly" $(PYTEST_ARGS)

## List the benchmarks (each is one script in benchmarks/, its results in docs/benchmarks.md); run one with
## `make bench B=compress_vs_pool ARGS="--images 400"` (each script's --help gives its options). They take minutes
## to hours each, so there is no "run them all".
bench: $(STAMP)
ifdef B
	$(BIN)/python benchmarks/$(B).py $(ARGS)
else
	@for f in benchmarks/[a-z]*.py; do printf '%-22s %s\n' "$$(basename $$f .py)" "$$(sed -n '1s/^"""//p' $$f | cut -c1-96)"; done
	@echo 'run one: make bench B=NAME ARGS="..."  (GPU: bash benchmarks/gpu_check.sh, see docs/benchmarks.md)'
endif

clean:
	rm -rf $(VENV) runs data .pytest_cache
