# The README's two commands: `make reproduce` (every figure, laptop scale) and `make test`.
# Both create .venv and install fleos into it on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
CONFIG ?= config/config.yaml
TARGET ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv reproduce test test-fast lint clean

$(BIN)/fleos: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/fleos

reproduce: venv
	$(BIN)/snakemake --cores $(CORES) --configfile=$(CONFIG) $(TARGET)

test: venv
	$(BIN)/pytest

# the tests not marked slow (each of those takes more than ~30 s on 2 cores)
test-fast: venv
	$(BIN)/pytest -m "not slow"

lint: venv
	$(BIN)/ruff check src tests workflow bench studies
	$(BIN)/snakemake --lint

# config/README.md is generated from the schema (tests/test_workflow.py checks it is current)
config/README.md: workflow/schemas/config.schema.yaml src/fleos/pipeline.py | venv
	$(BIN)/python -c "import fleos.pipeline as p; print(p.config_readme(), end='')" > $@

clean:
	rm -rf results/* .snakemake
