# The README's two commands: `make reproduce` (every figure, laptop scale) and `make test`.
# Both create .venv and install fleos into it on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
CONFIG ?= config/config.yaml
TARGET ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv reproduce test lint clean

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

lint: venv
	$(BIN)/ruff check src tests workflow bench
	$(BIN)/snakemake --lint

clean:
	rm -rf results/* .snakemake
