# fedcollab: every set-up step lives here, so a fresh machine needs only `make demo` / `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck unit integration multihost experiments clean browser netns-tools console \
	containers-tools containers containers-test scale-deployment

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build (a plain `torch` would pull a multi-GB CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## The demo federation: coordinator + 9 brand partner nodes over TLS on loopback.
demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/fedcollab demo --out results/demo

## The web console over the demo's workspace (run `make demo` first): http://127.0.0.1:8080/
## The demo wrote its accounts, with fresh random passwords, to results/demo/console/credentials.txt.
console: $(STAMP)
	$(BIN)/fedcollab console start -w results/demo/federation/workspace

## Headless Chromium for the console's browser tests: Debian's package (no download
## from a browser vendor's CDN). Needs root or sudo on a machine without it.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }

## `ip` and `tc` (Debian's iproute2) for the several-hosts test's network namespaces.
netns-tools:
	@command -v ip >/dev/null && command -v tc >/dev/null || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends iproute2; }

## Podman (with runc: crun refuses this machine's hybrid cgroups), podman-compose and
## debootstrap for the container images and their test (deploy/, docs/deployment.md).
containers-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v podman-compose >/dev/null \
	  && command -v debootstrap >/dev/null || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q podman runc debootstrap \
	  && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends podman-compose; }

## The coordinator and node images (localhost/fedcollab-coordinator, localhost/fedcollab-node). Needs root.
containers: containers-tools
	deploy/build-images.sh

## Builds the images and runs a coordinator and three partners with podman-compose: an
## encrypted job end to end (tests/integration/test_containers.py). Needs root.
containers-test: $(STAMP) containers-tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -s -m containers tests/integration/test_containers.py

## Every check: lint, format, types, unit and integration tests, the several-hosts test
## (7-9 min on a loaded 2-core machine) and both restart tests included. The container
## test (image builds: 20+ min on a fresh machine) runs with `make containers-test` only.
test: $(STAMP) browser netns-tools lint typecheck
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -m "not containers"

check: test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# The import-layer contract (common < privacy < protocols < compliance < client, coordinator
	# < federation < demo < cli),
	# the long-module rule (a product module over 400 lines says why at its top) and the tests map
	# (every product module has tests/<pkg>/test_<module>.py or a checked entry in tests/test_map.py).
	$(BIN)/pytest -q -p no:cacheprovider tests/test_layers.py tests/test_module_size.py tests/test_map.py

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration"

integration: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -m integration

## Several hosts on one machine: the coordinator and three partners, each in its own
## network namespace (veth pairs on a bridge, TLS names of those hosts). Needs root.
multihost: $(STAMP) netns-tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -s tests/integration/test_multihost.py \
	  tests/integration/test_restart.py

## Every study behind the README's results: JSON, docs/figures/*.png and the README's block.
experiments: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m experiments.reproduce --out results/experiments

## 20 real partner nodes (SuperLink over TLS, node authentication) run encrypted purchase jobs
## on this machine: times, peak memory, test AUC (experiments/scale_deployment.py).
scale-deployment: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m experiments.reproduce --out results/experiments \
	  --only scale_deployment

clean:
	rm -rf $(VENV) results .mypy_cache .ruff_cache .pytest_cache
