# The two commands a user needs: `make run` and `make test`. Everything else is for developers.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test mutants bench venv clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## make run: start a dev agent (server + agent, ephemeral store) on 127.0.0.1:8500
run: $(STAMP)
	$(BIN)/tether agent -dev

## make test: install what the tests need, then run the whole suite
test: $(STAMP)
	bash scripts/test-deps.sh
	$(BIN)/python -m pytest -q

## make mutants: break client-certificate checks, authorization and blocking queries in a copy
## of src/ and check that the tests notice (docs/testing.md, "Mutation check")
mutants: $(STAMP)
	$(BIN)/python scripts/mutants.py

## make bench: benchmarks (not tests); prints tables, writes bench/results/*.json
bench: $(STAMP)
	bash scripts/test-deps.sh
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
