# phitune — every entry point a user or CI needs. `make demo` and `make test` work on a fresh
# machine: they create the virtualenv (exact versions from constraints.txt) and install the
# offline datasets first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DATA_DIR ?= .phitune/data
PYTEST_ARGS ?=

.PHONY: venv data postgres demo test lint serve clean bench-schedules bench-curvature \
	bench-trainer bench-quality bench-quality-lr bench-quality-gpu bench-search bench-phi \
	bench-service bench-load bench-warm-start

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

$(DATA_DIR)/.installed: scripts/install_data.sh | venv
	bash scripts/install_data.sh $(VENV) $(DATA_DIR)
	touch $@

data: $(DATA_DIR)/.installed

# PostgreSQL server binaries for the store tests (they start a throwaway cluster themselves)
postgres:
	bash scripts/install_postgres.sh

demo: venv data
	PHITUNE_DATASET_DIR=$(abspath $(DATA_DIR)) $(VENV)/bin/phitune demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: venv data postgres lint
	PHITUNE_DATASET_DIR=$(abspath $(DATA_DIR)) $(PY) -m pytest -q $(PYTEST_ARGS)

serve: venv data
	PHITUNE_DATASET_DIR=$(abspath $(DATA_DIR)) $(VENV)/bin/phitune serve

bench-schedules: venv
	$(PY) bench/schedule_overhead.py
	$(PY) bench/make_schedule_plots.py

bench-curvature: venv data
	$(PY) bench/curvature_bench.py

bench-trainer: venv data
	PHITUNE_DATASET_DIR=$(abspath $(DATA_DIR)) $(PY) bench/trainer_overhead.py

bench-quality: venv data
	$(PY) -m bench.schedule_quality
	$(PY) -m bench.schedule_quality --lr 0.1 --seeds 3

bench-quality-lr: venv data
	$(PY) -m bench.schedule_quality --lr-grid 0.025,0.05,0.1,0.2 --seeds 3 --tune-trials 16

bench-quality-gpu: venv data
	$(PY) -m bench.schedule_quality --preset gpu --threads 4

bench-search: venv data
	$(PY) -m bench.search_efficiency
	$(PY) -m bench.search_efficiency --train-seeds 3

bench-phi: venv data
	$(PY) -m bench.phi_suggestions

bench-warm-start: venv data
	$(PY) -m bench.warm_start

bench-service: venv data
	PHITUNE_DATASET_DIR=$(abspath $(DATA_DIR)) $(PY) bench/service_overhead.py

bench-load: venv
	$(PY) bench/load_api.py

clean:
	rm -rf .phitune .pytest_cache .ruff_cache
