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

.PHONY: venv data demo test lint serve bench-schedules bench-curvature bench-trainer clean

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

demo: venv data
	PHITUNE_DATASET_DIR=$(abspath $(DATA_DIR)) $(VENV)/bin/phitune demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: venv data lint
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

clean:
	rm -rf .phitune .pytest_cache .ruff_cache
