# kxnet: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CI and the CPU machines take this pinned CPU build; on a GPU machine install your CUDA
# build of torch into $(VENV) first (it is kept) or pass TORCH="torch==X --index-url ...".
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install test test-full test-tables lint format mutants train notebooks bench bench-gpu data clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP) ## Create $(VENV) and install kxnet with its test tools

# pytest-xdist: one test worker per core, 8 at most (the cores shared out among them:
# tests/conftest.py); WORKERS=N sets their number, WORKERS=0 runs the tests in this process.
WORKERS ?= auto
XDIST := -n $(WORKERS) --maxprocesses 8 --dist worksteal

test: install ## Run the fast tests (WORKERS=N: N at once, default one per core)
	$(PY) -m pytest $(XDIST) -m "not slow" -q

test-full: install ## Run every test, the slow ones included (and list the 25 slowest)
	$(PY) -m pytest $(XDIST) -q --durations=25

test-tables: install ## Check every Bicubic row of the paper's tables, all of BSD100 and Urban100 included
	KXNET_TEST_FULL_TABLES=1 $(PY) -m pytest $(XDIST) -q tests/test_eval.py -k full_bicubic_tables

lint: install ## Check style with ruff
	$(PY) -m ruff check src tests experiments notebooks
	$(PY) -m ruff format --check src tests experiments notebooks

MODULES ?=
mutants: install ## Mutation testing of the paper's and the promises' modules, a score each (MODULES="physics loss": some)
	nice -n 10 $(PY) tests/mutants.py $(MODULES)

format: install ## Format the code with ruff
	$(PY) -m ruff check --fix src tests experiments notebooks
	$(PY) -m ruff format src tests experiments notebooks

DATA_ROOT ?= data/full
SETS ?= train
data: install ## Fetch, check and prepare DIV2K + Flickr2K (+ DIV2K validation) into $(DATA_ROOT) (FROM=a local copy)
	$(PY) -m kxnet.data download --root $(DATA_ROOT) --sets $(SETS) $(if $(FROM),--from $(FROM))
	$(PY) -m kxnet.data prepare $(DATA_ROOT)/DIV2K_Flickr2K $(DATA_ROOT)/DIV2K_Flickr2K_prepared

train: install ## Train the quick preset on a CPU, then evaluate it on Set5 beside bicubic
	$(PY) -m kxnet.train experiment=quick

notebooks: install ## Run the notebooks into outputs/notebooks/ (KXNET_CHECKPOINT=FILE picks the network)
	mkdir -p outputs/notebooks
	cp notebooks/*.ipynb outputs/notebooks/
	cd outputs/notebooks && $(abspath $(PY)) -m jupyter execute --inplace *.ipynb

bench: install ## Time KXNet against the authors' formulation (extra Hydra overrides: ARGS="scale=2 ...")
	$(PY) -m kxnet.bench $(ARGS)

bench-gpu: install ## The GPU figures: x4 S=19 batch 12 (fp32/bf16, eager/compiled), Set5 x2 (ARGS=--smoke: tiny, CPU)
	$(PY) experiments/bench_gpu.py $(ARGS)

clean: ## Remove build and test outputs (keeps $(VENV))
	rm -rf .pytest_cache .ruff_cache src/*.egg-info
