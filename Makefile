# Two commands on a fresh machine: `make demo` and `make test`. Both build their own
# virtualenv inside the checkout first; nothing needs to be installed beforehand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export QUOTA_LEDGER_HOME ?= $(CURDIR)/.quota-ledger

# JupyterHub 5.x: a second virtualenv that runs only the hub-facing tests (hook, web service,
# real-hub end to end), so both supported major versions are tested in `make test`.
JH5_VENV := .venv-jh5
JH5_STAMP := $(JH5_VENV)/.installed-stamp
JH5_TESTS := tests/test_hub_hook.py tests/test_hub_install.py tests/test_hub_e2e.py \
	tests/test_web_routes.py tests/test_hub_pages.py
# The npm configurable-http-proxy streams the spawn progress as it comes; the PyPI one buffers it.
NPM_PREFIX := .npm
CHP := $(NPM_PREFIX)/node_modules/.bin/configurable-http-proxy
export PATH := $(CURDIR)/$(NPM_PREFIX)/node_modules/.bin:$(PATH)

.PHONY: demo test test-jh5 lint fmt bench bench-prometheus browser psql proxy docker image clean
# The container image (Dockerfile). PYTHON_IMAGE: the official image by default; where no
# registry is reachable, the local stand-in that .ci/docker-up.sh builds (local/python:3.11-slim-bookworm).
IMAGE ?= quota-ledger:dev
PYTHON_IMAGE ?= python:3.11-slim-bookworm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

$(JH5_STAMP): pyproject.toml tests/requirements-jh5.txt
	test -x $(JH5_VENV)/bin/python || $(PYTHON) -m venv $(JH5_VENV)
	$(JH5_VENV)/bin/pip install -q --upgrade pip
	$(JH5_VENV)/bin/pip install -q -e '.[all]' -r tests/requirements-jh5.txt
	touch $(JH5_STAMP)

$(CHP):
	command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "error: npm missing (apt-get install nodejs npm)"; exit 1; fi; }
	npm install --silent --no-audit --no-fund --prefix $(NPM_PREFIX) configurable-http-proxy@5

proxy: $(CHP)

# Browser tests drive Debian's chromium through Playwright (never `playwright install`:
# it downloads a browser build, which cannot be fetched here). Under CI=true a chromium that
# cannot be installed fails the run (the browser tests would fail anyway, see
# tests/requirements.py); elsewhere they are skipped with a warning.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || { echo "could not install chromium (apt-get install chromium)"; missing=1; }; \
	  else echo "/usr/bin/chromium missing and not root: apt-get install chromium"; missing=1; fi; \
	  if [ -n "$$missing" ]; then \
	    case "$$CI" in true|1|yes) echo "error: CI=true needs chromium for the browser tests"; exit 1;; \
	      *) echo "warning: browser tests will be skipped";; esac; fi; }

# The Docker tests need a real engine and the local base image (no registry is reachable):
# .ci/docker-up.sh installs docker.io if needed, starts dockerd and builds the base. In CI a
# failure here fails the run (the tests would fail anyway: CI=true never skips them).
docker:
	@docker info >/dev/null 2>&1 && docker image inspect local/python:3.11-slim-bookworm >/dev/null 2>&1 \
	  || { if [ "$$(id -u)" = 0 ]; then bash .ci/docker-up.sh; \
	       else echo "warning: no Docker engine; Docker tests will be skipped"; fi; }

image:
	docker build --network host --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -t $(IMAGE) .

# The docs' SQL examples run in the real psql client (tests/test_docs_sql.py); same rules as
# the browser: installed when root, a failure under CI=true, a skip with a warning elsewhere.
psql:
	@test -x /usr/bin/psql || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null) \
	      || { echo "could not install psql (apt-get install postgresql-client)"; missing=1; }; \
	  else echo "/usr/bin/psql missing and not root: apt-get install postgresql-client"; missing=1; fi; \
	  if [ -n "$$missing" ]; then \
	    case "$$CI" in true|1|yes) echo "error: CI=true needs psql for the docs' SQL tests"; exit 1;; \
	      *) echo "warning: the docs' SQL tests will be skipped";; esac; fi; }

demo: $(STAMP) $(CHP)
	$(BIN)/quota-ledger demo

test: $(STAMP) $(JH5_STAMP) $(CHP) browser psql docker
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest
	$(JH5_VENV)/bin/pytest -q $(JH5_TESTS)

test-jh5: $(JH5_STAMP) $(CHP) browser
	$(JH5_VENV)/bin/pytest -q $(JH5_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/ledger_bench.py

bench-prometheus: $(STAMP)
	$(BIN)/python benchmarks/vs_prometheus.py

clean:
	rm -rf $(VENV) $(JH5_VENV) $(NPM_PREFIX) .quota-ledger .pytest-pg build *.egg-info
