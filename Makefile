# datadiet_jax: `make run` (install, prepare Fashion-MNIST, run the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/fashion_mnist
CONFIG ?= configs/fashion_mnist.py
SCALE ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install constraints data run test lint format bench reproduce-fig1 reproduce-fig2 reproduce-fig3 reproduce-fig4 \
	reproduce-transfer reproduce-seedcount reproduce-methods reproduce-speedup reproduce-crossover clean

# Every extra, at the exact versions of constraints.txt (setup.cfg holds the compatible ranges).
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[pipeline,hf,dev]'
	touch $@

install: $(VENV)/.installed

# After a range in setup.cfg changes: reinstall within the ranges, then record the versions.
constraints:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[pipeline,hf,dev]'
	echo "# The exact versions \`make install\` installs (\`make constraints\` writes this file)." > constraints.txt
	$(PY) -m pip freeze --all --exclude-editable >> constraints.txt
	touch $(VENV)/.installed

# The Fashion-MNIST files come from Debian's dataset-fashion-mnist package when apt is usable;
# without them TFDS downloads the dataset on first use.
data: install
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	    || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	fi
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
	  $(PY) -m datadiet_jax.pipeline.prepare_data; \
	else \
	  echo "dataset-fashion-mnist is not installed; TFDS will download fashion_mnist when first used."; \
	fi

run: data
	$(PY) -m datadiet_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

# Tests run on one worker per core (pytest-xdist); each group of tests that share a run
# (tests/conftest.py) stays on one worker. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto
test: data
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 tests

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: data
	$(PY) -m benchmarks.bench_scores --out=bench
	$(PY) -m benchmarks.bench_loop --out=bench
	$(PY) -m benchmarks.bench_prune --out=bench
	$(PY) -m benchmarks.bench_backward --out=bench
	$(PY) -m benchmarks.bench_selectors --out=bench
	$(PY) -m benchmarks.bench_stacked --out=bench
	$(PY) -m benchmarks.bench_public_call --out=bench
	$(PY) -m benchmarks.bench_xla_flags --out=bench
	$(PY) -m benchmarks.bench_memory --model=resnet18 --batch=32 > bench/memory.jsonl
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(PY) -m benchmarks.bench_mesh_memory --out=bench
	# The measured tables of the docs are the files written here (benchmarks/doc_tables.py).
	$(PY) -m benchmarks.doc_tables --bench=bench

reproduce-fig2: data
	$(PY) -m experiments.fig2 --scale=$(SCALE)

reproduce-fig1: data
	$(PY) -m experiments.fig1 --scale=$(SCALE)

reproduce-fig3: data
	$(PY) -m experiments.fig3 --scale=$(SCALE)

reproduce-fig4: data
	$(PY) -m experiments.fig4 --scale=$(SCALE)

reproduce-transfer: data
	$(PY) -m experiments.transfer --scale=$(SCALE)

reproduce-seedcount: data
	$(PY) -m experiments.seedcount --scale=$(SCALE)

reproduce-methods: data
	$(PY) -m experiments.methods --scale=$(SCALE)

reproduce-speedup: data
	$(PY) -m experiments.speedup --scale=$(SCALE)

reproduce-crossover: data
	$(PY) -m experiments.crossover --scale=$(SCALE)

clean:
	rm -rf $(VENV) runs figures bench .pytest_cache .ruff_cache .jax_cache *.egg-info
