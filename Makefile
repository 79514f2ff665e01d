# Rainforest Logger. `make demo` and `make test` are the quick start; both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint chromium bench bench-pinger bench-api bench-rotate bench-cart bench-push bench-compact bench-alerts bench-erase bench-scale deps redis-server prometheus clean images test-containers

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" != 0 ]; then echo "python3 cannot make a virtualenv: run 'sudo apt-get install python3-venv' and try again."; exit 1; fi; \
	  echo "installing python3-venv with apt-get..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	@$(BIN)/pip install --quiet --upgrade pip
	@$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

ASSETS := app/web/static/vendor/uplot/uPlot.iife.min.js
# Builds local stand-ins for the images docker-compose.yml names (this workplace has no registry).
STANDIN ?= ../shared/containers/standin-images.sh

deps: $(STAMP) redis-server $(ASSETS)

# The pages' chart library (uPlot), fetched once from the npm registry and verified by its
# published digest: the server serves it itself, so deployments need no CDN.
$(ASSETS): scripts/fetch_assets.py
	@$(BIN)/python scripts/fetch_assets.py

# Headless Chromium (Debian's package) for the page tests, driven by Playwright.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" != 0 ]; then echo "chromium is missing: run 'sudo apt-get install chromium' and try again."; exit 1; fi; \
	  echo "installing chromium with apt-get..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || { echo "apt-get could not install chromium: install it by hand and try again."; exit 1; }; }

# redis-server (and curl, which the cart tests and the README's examples use, and openssl,
# which makes the TLS tests' CA) are Debian
# packages, not Python ones: install them when missing (needs root).
redis-server:
	@command -v redis-server >/dev/null && command -v redis-sentinel >/dev/null && command -v curl >/dev/null && command -v openssl >/dev/null || { \
	  if [ "$$(id -u)" != 0 ]; then echo "redis-server, redis-sentinel, curl or openssl is missing: run 'sudo apt-get install redis-server redis-sentinel curl openssl' and try again."; exit 1; fi; \
	  echo "installing redis-server and curl with apt-get..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-sentinel curl openssl >/dev/null) \
	    || { echo "apt-get could not install redis-server and curl: install them by hand and try again."; exit 1; }; }

# Prometheus, promtool and Alertmanager (Debian's packages) for the alert-rule tests.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || { \
	  if [ "$$(id -u)" != 0 ]; then echo "prometheus is missing: run 'sudo apt-get install prometheus prometheus-alertmanager' and try again."; exit 1; fi; \
	  echo "installing prometheus and prometheus-alertmanager with apt-get..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null) \
	    || { echo "apt-get could not install prometheus: install it by hand and try again."; exit 1; }; }

demo: deps
	@$(BIN)/python scripts/demo.py

# The suite on one redis-server, then the Redis-heavy tests again on a three-primary Redis Cluster.
CLUSTER_TESTS := tests/test_pingers_share.py tests/test_api.py tests/test_push.py tests/test_carts.py \
	tests/test_rotate.py tests/test_store.py tests/test_studies.py tests/test_completeness.py tests/test_ownership.py

test: deps chromium prometheus
	$(BIN)/pytest -q
	$(BIN)/pytest -q --redis-cluster $(CLUSTER_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check app tests bench scripts
	$(BIN)/ruff format --check app tests bench scripts
	$(BIN)/mypy

bench: deps
	$(BIN)/python bench/pinger.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/rotate.py
	$(BIN)/python bench/cart.py
	$(BIN)/python bench/push.py
	$(BIN)/python bench/compact.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/erase.py
	$(BIN)/python bench/scale.py

bench-alerts: deps
	$(BIN)/python bench/alerts.py

bench-pinger: deps
	$(BIN)/python bench/pinger.py

bench-api: deps
	$(BIN)/python bench/api.py

bench-rotate: deps
	$(BIN)/python bench/rotate.py

bench-cart: deps
	$(BIN)/python bench/cart.py

bench-push: deps
	$(BIN)/python bench/push.py

bench-compact: deps
	$(BIN)/python bench/compact.py

bench-erase: deps
	$(BIN)/python bench/erase.py

bench-scale: deps
	$(BIN)/python bench/scale.py

# The container images: rainforest/base (OS packages and every dependency, slow, rebuilt when
# pyproject.toml changes) and rainforest/app on top (the code, seconds). docker-compose.yml
# runs rainforest/app; docs/containers.md. DOCKER_BUILD_FLAGS: e.g. --network host, --pull.
DOCKER_BUILD_FLAGS ?= --network host
images:
	@command -v docker >/dev/null || { echo "docker is missing: install docker.io (or Docker Engine) and try again."; exit 1; }
	docker build $(DOCKER_BUILD_FLAGS) -t rainforest/base:latest -f docker/base/Dockerfile .
	docker build $(DOCKER_BUILD_FLAGS) --build-arg BASE_IMAGE=rainforest/base:latest -t rainforest/app:latest -f docker/app/Dockerfile .

# The container deployment started for real (root, minutes; not part of `make test`): local
# stand-ins for the images compose names, then scripts/test_containers.py drives docker-compose.
test-containers: $(STAMP)
	@if [ "$$(id -u)" != 0 ]; then echo "make test-containers needs root (it installs docker.io and starts dockerd)."; exit 1; fi
	bash $(STANDIN)
	$(MAKE) images
	$(BIN)/python scripts/test_containers.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
