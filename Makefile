# The two set-up commands of the README: `make repro` (the pipeline) and `make test`.
# Both create .venv and install what they need first.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install repro test lint

install:
	@bash scripts/install.sh

repro: install
	$(BIN)/dvc repro

test: install lint
	$(BIN)/python -m pytest -q

# Style, format and types (mypy's packages are listed in pyproject.toml).
lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
