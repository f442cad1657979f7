# The set-up commands of the README: `make book` and `make test`; CI adds the book at the ci scale
# and the browser check of its pages (`make book MLSKY_SCALE=ci check-html`).
# All use the active virtual (or conda) environment, or create .venv when none is active.

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
# `make book` runs every chapter at MLSKY_SCALE when it is set (CI: MLSKY_SCALE=ci), else at the
# package's default (laptop on a CPU, paper with CUDA). Chapters are re-executed only when their
# code, the scale, the device or the package changed: the jupyter-cache is named by all four.
BOOK_CONFIG := _build/book_config.yml
JB = $(dir $(shell command -v $(PYTHON)))jupyter-book

.PHONY: install book book-times check-html test clean

install: $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[book,dev]"

.venv/bin/python:
	python3 -m venv .venv

# Progress bars are for people at a terminal, not for the pages (TQDM_DISABLE). A warning, a broken
# reference or a chapter that raises fails the build; the failing cell is printed with its traceback.
book: install
	$(PYTHON) -m mlsky.book config _config.yml -o $(BOOK_CONFIG)
	TQDM_DISABLE=1 $(JB) build . --config $(BOOK_CONFIG) --all -W -n --keep-going; \
	  status=$$?; echo "Execution time of each chapter (jupyter-cache of this build):"; \
	  $(PYTHON) -m mlsky.book times $(BOOK_CONFIG); exit $$status
	@echo "The book is in $(CURDIR)/_build/html: open $(CURDIR)/_build/html/index.html"

book-times:
	@echo "Execution time of each chapter (jupyter-cache of the last build):"
	@$(PYTHON) -m mlsky.book times $(BOOK_CONFIG)

# Opens every page of the built book in headless Chromium (Debian's `chromium`); screenshots go to
# _build/screenshots/.
check-html:
	$(PYTHON) -m pytest tests/test_html.py -m html -p no:cacheprovider -q

test: install
	MLSKY_SCALE=$(TEST_SCALE) $(PYTHON) -m pytest tests book src/mlsky --doctest-modules -m "not html" --nbval-lax --nbval-current-env -p no:cacheprovider --durations=15

clean:
	rm -rf _build .pytest_cache
