# Quickstart targets. Each one sets itself up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SHOT   := build/web.png

.PHONY: install test test-browser web-screenshot load-test lint demo gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, pinned: pip takes these two from the machine's local wheel store when it has them.
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[test,baselines]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy src
	$(PY) -m pytest -q

# The web page in headless Chromium (Debian's chromium + chromium-driver, installed if missing);
# the screenshot it takes goes to $(SHOT).
test-browser: $(STAMP)
	[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium chromium-driver; }
	BOLTZFORMER_SCREENSHOT=$(CURDIR)/$(SHOT) $(PY) -m pytest -q -m browser tests/test_web_browser.py

# The README's screenshot of the web app: CHECKPOINT serving IMAGE for PROMPT, in headless
# Chromium (docs/inference.md says which model and image the committed one shows).
web-screenshot: test-browser
	$(PY) -m boltzformer.apps.web_screenshot --checkpoint "$(CHECKPOINT)" --image "$(IMAGE)" \
		--prompt "$(PROMPT)" --out docs/web.png

# `boltzformer serve` under load: 12 concurrent gradio_client sessions x 10 waves, then 10
# back-to-back bursts of 12 new clients with gradio_client's default time-outs, memory held
# under the server's start + --cache-mb 256 (see src/boltzformer/apps/web_load.py; the short
# versions are tests/test_web_load.py).
load-test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m boltzformer.apps.web_load --sessions 12 --waves 10
	OMP_NUM_THREADS=1 $(PY) -m boltzformer.apps.web_load --sessions 12 --waves 10 --burst --cache-mb 256

demo: $(STAMP)
	$(VENV)/bin/boltzformer demo --out demo_output

# Each CUDA path once (training paper-hiera-s at 1024² in bf16, tiny under torchrun with NCCL,
# the Predictor in bf16/fp16, bench --decoder-only at 1024²) -> gpu_check.json; exit 1 if a
# check failed. On a CPU the same code at tiny sizes (docs/training.md).
gpu-check: $(STAMP)
	$(PY) -m boltzformer.apps.gpu_check --out gpu_check.json

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
