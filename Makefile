# Quickstart targets. Each one sets itself up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, pinned: pip takes these two from the machine's local wheel store when it has them.
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[test,baselines]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests docs
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/boltzformer demo --out demo_output

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests docs

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
