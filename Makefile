# The two commands users need: `make demo` and `make test`. Both set everything up from nothing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export SPARK_LOCAL_IP ?= 127.0.0.1
export RAY_AUTH_MODE ?= disabled
export PYSPARK_SUBMIT_ARGS ?= --driver-memory 4g pyspark-shell

.PHONY: install test demo bench lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU torch wheel first, so no multi-GB CUDA build is pulled in by a dependency.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# ruff, then the layering rules (import-linter contracts in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The documentation site, strictly: a broken link or anchor fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test: install lint docs
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15 tests

demo: install
	$(PY) -m neuro_caduceus.demo --out demo_out

# GenVarLoader (the haplotype benchmark's baseline) pins polars<2 and pyarrow<25: it gets its own venv.
bench: install
	test -x .venv-gvl/bin/python || (python3 -m venv .venv-gvl && .venv-gvl/bin/pip install -q genvarloader)
	for b in benchmarks/bench_*.py; do echo "== $$b"; GVL_PYTHON=.venv-gvl/bin/python $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-gvl demo_out site
