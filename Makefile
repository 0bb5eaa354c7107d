# QuantCoach: `make replay` replays the bundled sample interview; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: venv install replay test lint format bench web clean

venv: $(BIN)/python
$(BIN)/python:
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; assert (3, 11) <= v < (3, 13), f"Python 3.11 or 3.12 needed, found {v}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(STAMP)
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

replay: install
	$(BIN)/quantcoach replay samples/interview

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/run_all.py

web: install
	$(BIN)/quantcoach web

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache *.egg-info
