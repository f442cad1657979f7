# The two set-up commands of the README: `make book` and `make test`.
# Both use the active virtual (or conda) environment, or create .venv when none is active.

SHELL := /bin/bash
ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PYTHON ?= python
VENV :=
else
PYTHON ?= .venv/bin/python
VENV := .venv/bin/python
endif
# Offline copies of the real data sets: a developer's checkout has them in ../shared/data.
MLSKY_DATA_DIR ?= $(wildcard $(abspath ../shared/data))
export MLSKY_DATA_DIR
# `make test` runs at the small ci scale unless told otherwise (the GPU job: TEST_SCALE=paper).
TEST_SCALE ?= ci
# Chapters are executed afresh in CI and re-used from the cache elsewhere.
JB_EXECUTE := $(if $(CI),force,cache)

.PHONY: install book test clean

install: $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[book,dev]"

.venv/bin/python:
	python3 -m venv .venv

book: install
	$(PYTHON) -c "import sys, yaml; c = yaml.safe_load(open('_config.yml')); c['execute']['execute_notebooks'] = sys.argv[1]; yaml.safe_dump(c, open('_build_config.yml', 'w'))" $(JB_EXECUTE)
	$(dir $(shell command -v $(PYTHON)))jupyter-book build . --config _build_config.yml -W -n --keep-going
	@rm -f _build_config.yml
	@echo "The book is in $(CURDIR)/_build/html: open $(CURDIR)/_build/html/index.html"

test: install
	MLSKY_SCALE=$(TEST_SCALE) $(PYTHON) -m pytest tests book --nbval-lax --nbval-current-env -p no:cacheprovider --durations=15

clean:
	rm -rf _build _build_config.yml .pytest_cache
