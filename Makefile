# lit-cologen: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast lint demo speed clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24"
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check lit_cologen benchmarks tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

speed: setup
	$(PY) -m benchmarks.speed --preset tiny

demo: setup
	$(VENV)/bin/cologen demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
