# Hygie: make serve · make test · make bench · make lint
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
DOMAIN ?= hygie.localhost
STAMP := $(VENV)/.installed

.PHONY: serve test bench lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

$(DATA)/hygie.toml: | $(STAMP)
	$(BIN)/hygie init --data-dir $(DATA) --domain $(DOMAIN)

serve: $(STAMP) $(DATA)/hygie.toml
	$(BIN)/hygie serve --data-dir $(DATA)

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m tests.bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
