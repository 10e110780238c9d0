# The two set-up commands of the README: `make repro` (the pipeline) and `make test`.
# Both create .venv and install what they need first.
VENV := .venv
BIN := $(VENV)/bin
# Recipes, and the stage commands `dvc repro` runs from them (`steerops ...`), find the
# venv's tools without an activated environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro toy test lint docs

install:
	@bash scripts/install.sh

# The main job: the real-model experiment (params.yaml) up to its report.
repro: install
	$(BIN)/dvc repro report

# The second experiment: the toy world (experiments/toy/params.yaml), every stage in order.
TOY := --params experiments/toy/params.yaml
toy: install
	$(BIN)/steerops toy $(TOY)
	$(BIN)/steerops generate $(TOY)
	$(BIN)/steerops extract $(TOY)
	$(BIN)/steerops calibrate $(TOY)
	$(BIN)/steerops vectors $(TOY)
	$(BIN)/steerops clean $(TOY)
	$(BIN)/steerops steer --pipeline $(TOY)
	$(BIN)/steerops search --pipeline $(TOY)
	$(BIN)/steerops report $(TOY)

test: install lint
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# Style, format and types (mypy's packages are listed in pyproject.toml).
lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The params reference, written from the params models (a test checks it is current).
docs: install
	$(BIN)/python -m steerops.config.reference > docs/params.md
