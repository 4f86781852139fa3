# The README's two commands are `make run` and `make test`; everything else is
# a step of those. Every target installs what it needs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements/dev.lock pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements/dev.lock
	$(PY) -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with the pinned dependencies

# Debian packages the tests use: promtool and prometheus (alert rules, a real
# scrape), and the real node (hack/realnode.py): containerd, runc, the CNI
# plugins, a static busybox and mmdebstrap for its images, and PostgreSQL for
# the stand-in GitLab.
APT_TOOLS := prometheus containerd runc containernetworking-plugins busybox-static mmdebstrap postgresql buildah

.PHONY: tools
tools: ## system tools the tests use (Debian packages): $(APT_TOOLS)
	@missing=""; \
	for cmd in promtool prometheus containerd ctr runc mmdebstrap psql buildah; do command -v $$cmd >/dev/null || missing=1; done; \
	[ -x /usr/lib/postgresql/15/bin/postgres ] || missing=1; \
	[ -x /usr/lib/cni/bridge ] || missing=1; \
	[ -x /bin/busybox ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian's $(APT_TOOLS)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_TOOLS) >/dev/null; \
	fi

.PHONY: binaries
binaries: ## build (or find cached) kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok
	bash hack/build-binaries.sh all >/dev/null

.PHONY: cluster-up cluster-down
cluster-up: ## start the local control plane (reused when running) and print its kubeconfig
	$(PYTHON) hack/localcluster.py up
cluster-down: ## stop the local control plane and delete its state
	$(PYTHON) hack/localcluster.py down

.PHONY: run
run: venv tools ## run the operator: against $KUBECONFIG, or a local control plane it starts
	$(PY) hack/run.py $(RUN_ARGS)

.PHONY: kind-e2e
kind-e2e: ## on a machine with Docker: kind cluster, image, manifests, integration suite
	bash hack/kind-e2e.sh

.PHONY: manifests
manifests: venv ## render the kustomize manifests from the Helm chart (builds helm once)
	$(PY) hack/manifests.py

.PHONY: crd-reference
crd-reference: venv ## regenerate docs/crd-reference.md from the CRD schema
	$(PY) hack/crd-reference.py

.PHONY: lint
lint: venv ## ruff lint and format check, and the import layering (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

.PHONY: fmt
fmt: venv ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: typecheck
typecheck: venv ## mypy --strict on pdm_operator and the unit tests' world of asks
	$(VENV)/bin/mypy

.PHONY: unit
unit: venv tools ## unit tests (no cluster; builds Argo CD's Lua interpreter and trigger evaluator once)
	@bash hack/build-binaries.sh argo-lua argo-notify >/dev/null
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: integration
integration: venv tools ## integration tests on the real control plane ($KUBECONFIG or a local one)
	@# Build (or find) the local control plane first, outside pytest, so the
	@# first build's progress shows; the real node's images are made meanwhile
	@# (they wait on the package registry while Go keeps the cores busy).
	@if [ -z "$${PDM_TEST_KUBECONFIG:-}$${KUBECONFIG:-}" ]; then \
	  images=""; \
	  if [ "$${PDM_REAL_NODE:-1}" = 1 ]; then $(PY) hack/images.py & images=$$!; fi; \
	  bash hack/build-binaries.sh all kubelet >/dev/null; \
	  if [ -n "$$images" ]; then wait $$images || echo "[images] failed; the tests that need them will say why"; fi; \
	fi
	@# The chart's tests and the Argo CD scripts' tests, on any cluster.
	@bash hack/build-binaries.sh helm argo-lua >/dev/null
	$(PY) -m pytest tests/integration -m integration $(PYTEST_ARGS)

.PHONY: bench
bench: venv ## every benchmark but the soak (about 30 minutes; the default path on a real node); writes docs/benchmarks.md. Quick look: BENCH_ARGS=--quick
	@if [ -z "$${KUBECONFIG:-}" ]; then bash hack/build-binaries.sh all kubelet >/dev/null && $(PY) hack/images.py; fi
	$(PY) bench/run.py $(BENCH_ARGS)

.PHONY: soak
soak: venv ## the 60-minute soak (the operator's memory over time); adds its section to docs/benchmarks.md
	@if [ -z "$${KUBECONFIG:-}" ]; then bash hack/build-binaries.sh all >/dev/null; fi
	$(PY) bench/run.py --only soak --soak-minutes 60 $(BENCH_ARGS)

.PHONY: test
test: venv tools ## every gate: ruff, mypy, unit, integration (the first three beside the fourth)
	@# The static gates and the unit tests need a few CPU-seconds; the
	@# integration suite mostly waits on the cluster. So they run beside it:
	@# their output is shown when they end badly, and at the end in any case.
	@gates=$$(mktemp -d); \
	( if $(MAKE) --no-print-directory lint typecheck unit >$$gates/log 2>&1; then echo 0 >$$gates/rc; \
	  else echo 1 >$$gates/rc; echo "----- lint, typecheck or unit FAILED -----" >&2; cat $$gates/log >&2; fi ) & \
	static=$$!; rc=0; \
	$(MAKE) --no-print-directory integration || rc=$$?; \
	wait $$static; echo "----- lint, typecheck, unit -----"; cat $$gates/log; \
	if [ "$$(cat $$gates/rc)" != 0 ]; then echo "lint, typecheck or unit failed" >&2; rc=1; fi; \
	rm -rf $$gates; exit $$rc

.PHONY: lock
lock: venv ## re-resolve requirements/*.lock from pyproject.toml (uses uv)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -q -o requirements/runtime.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -q -o requirements/dev.lock

.PHONY: clean
clean: ## remove the virtualenv and caches (not the built binaries)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
