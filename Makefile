# Everyday commands. `make train ARGS="strategy=frozen trainer.max_epochs=5"` passes
# Hydra overrides through; PYTHON picks the interpreter (default: python3 on PATH).
PYTHON ?= python3
ARGS ?=

.PHONY: install train test test-fast bench bench-short bench-loader bench-gpu lint format clean

install: .make/installed

# Re-install only when the dependency list changes.
.make/installed: pyproject.toml
	$(PYTHON) -m pip install -e ".[dev]"
	@mkdir -p .make && touch $@

train: install
	$(PYTHON) -m src.train $(ARGS)

test: install
	$(PYTHON) -m pytest

test-fast: install
	$(PYTHON) -m pytest -m "not slow"

# The tutorial's loop against the template, same data/seed/epochs: make bench DATA=path/to/hymenoptera_data
DATA ?= data/hymenoptera_data
WEIGHTS ?= null
EPOCHS ?= 25
SEEDS ?= 42
bench: install
	$(PYTHON) -m benchmarks.compare_tutorial --data-dir $(DATA) --weights $(WEIGHTS) \
		--epochs $(EPOCHS) --seeds $(SEEDS) --cache-features

# Short runs, whole process: 2 and 4 epochs of both strategies, and a multirun of 4 jobs.
bench-short: install
	$(PYTHON) -m benchmarks.compare_tutorial --data-dir $(DATA) --weights $(WEIGHTS) \
		--epochs 2 4 --seeds $(SEEDS) --multirun-jobs 4

# One loader worker, uncached, images/s by JPEG size: template vs ImageFolder + PIL.
bench-loader: install
	$(PYTHON) -m benchmarks.loader --data-dir $(DATA)

# On a CUDA machine: 25 finetune epochs with the defaults, loader share, peak GPU memory.
bench-gpu: install
	$(PYTHON) -m benchmarks.gpu_check --data-dir $(DATA) --weights $(WEIGHTS) --epochs $(EPOCHS)

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: install
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:
	rm -rf .make .pytest_cache .ruff_cache *.egg-info
