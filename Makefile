# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-slow test-all demo bench docs dist clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,plots,datasets]"
	touch $(STAMP)

install: $(STAMP)

# Two workers (the machine's two cores); a file's tests stay on one worker. `make test` runs every
# test not marked slow (<= 15 minutes on 2 cores); `make test-slow` the slow ones (long trainings,
# the documentation's blocks, the wheel in a clean venv); `make test-all` (CI: .ci/run) both.
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-slow: $(STAMP)
	$(PYTEST) -m slow

test-all: $(STAMP)
	$(PYTEST)

# Omniglot from ../shared/data when it is there (or from $$RANKLOSS_TF_DATA), else scikit-learn's digits.
DEMO_DATA ?= $(wildcard ../shared/data/omniglot)

demo: $(STAMP)
	$(PY) -m rankloss_tf.app.cli demo $(if $(DEMO_DATA),--data-dir $(DEMO_DATA))

bench: $(STAMP)
	$(PY) benchmarks/run_all.py
	if [ -d ../shared/data/cars196 ]; then $(PY) benchmarks/cars196.py; else echo "Cars196 data absent: benchmarks/cars196.py skipped"; fi

docs: $(STAMP)
	$(PY) docs/make_api.py
	$(PY) docs/make_notebooks.py

# The sdist and the wheel in dist/, checked as PyPI would (the release workflow does the same).
dist: $(STAMP)
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*

clean:
	rm -rf $(VENV) .pytest_cache runs
