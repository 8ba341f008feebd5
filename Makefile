# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench bench-env clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "neurodecode needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/neurodecode workflow run workflows/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check neurodecode tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/store_io.py --quick --json outputs/bench_store.json
	$(BIN)/python benchmarks/ingest.py --quick --json outputs/bench_ingest.json
	$(BIN)/python benchmarks/data_loader.py --quick --json outputs/bench_loader.json
	$(BIN)/python benchmarks/splits.py --quick --json outputs/bench_splits.json
	$(BIN)/python benchmarks/workflow.py --quick --json outputs/bench_workflow.json
	$(BIN)/python benchmarks/adapters.py --quick --json outputs/bench_adapters.json
	$(BIN)/python benchmarks/codebook.py --quick --json outputs/bench_codebook.json
	$(BIN)/python benchmarks/pretraining.py --quick --json outputs/bench_pretraining.json
	MNE_LOGGING_LEVEL=warning $(BIN)/python benchmarks/real_data.py --quick --json outputs/real_data.json

# torch_brain (a benchmark peer) in its own environment: its ray/uv pins stay out of ours; it
# shares our torch and numpy through a .pth file
bench-env: $(STAMP)
	$(PYTHON) -m venv .venv-bench-tb
	echo "$(CURDIR)/$(VENV)/lib/python3.11/site-packages" > .venv-bench-tb/lib/python3.11/site-packages/zz_main_venv.pth
	.venv-bench-tb/bin/python -m pip install -q torch_brain==0.2.1

clean:
	rm -rf $(VENV) outputs .pytest_cache
