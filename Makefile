# The two set-up commands of the README: `make repro` (the pipeline) and `make test`.
# Both create .venv and install what they need first.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install repro test lint

install:
	@bash scripts/install.sh

repro: install
	$(BIN)/dvc repro

test: install
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench
