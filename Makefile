# streamscore: `make run` starts the whole pipeline, `make test` runs every test. `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
PIP := $(CURDIR)/$(VENV)/bin/pip
export PYTHONPATH := $(CURDIR)
STAMP := $(VENV)/.installed

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---------------------------------------------------------------------------------------------------- install
.PHONY: system-deps venv jars install
system-deps: ## Install missing Debian packages (JDK, Maven, redis-server, chromium, prometheus, valgrind)
	@bash infra/install_system.sh

# constraints.txt pins every transitive version we tested; torch is the PyPI (CUDA-capable) build.
$(STAMP): requirements.txt constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel
	$(PIP) install -q -r requirements.txt -c constraints.txt
	@touch $@

venv: $(STAMP) ## Create the Python 3.11 virtualenv with pinned dependencies

jars: $(STAMP) ## Fetch the Kafka broker, the Flink Kafka connector and Avro Java (the decoder tests' oracle) from Maven Central (cached in .cache/)
	@$(PY) -m infra.services kafka-libs >/dev/null
	@$(PY) -m infra.services flink-jars >/dev/null
	@$(PY) -m infra.services avro-jars >/dev/null

NATIVE_STAMP := $(VENV)/.native
NATIVE_SRC := $(shell find cpp_ext -path cpp_ext/build -prune -o -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.py' -o -name '*.pyi' -o -name CMakeLists.txt -o -name pyproject.toml \) -print)
$(NATIVE_STAMP): $(STAMP) $(NATIVE_SRC)
	@$(MAKE) --no-print-directory native
	@touch $@

install: system-deps venv jars $(NATIVE_STAMP) ## Everything `run` and `test` need (idempotent)

# --------------------------------------------------------------------------------------------------------- model
FRAUD_LATEST := artifacts/models/fraud/LATEST
SENTIMENT_LATEST := artifacts/models/sentiment/LATEST
$(FRAUD_LATEST): | $(STAMP)
	@$(MAKE) --no-print-directory train-fraud

.PHONY: train model
train: install train-fraud train-sentiment ## Train every model (writes versioned artifacts and metrics under artifacts/)

model: $(FRAUD_LATEST) $(SENTIMENT_LATEST) ## Train the fraud and sentiment models where no artifact exists yet

# The fraud model registry (pipelines/models): a running fraud job picks up a promotion or rollback without a restart.
.PHONY: models promote rollback shadow ab
models: venv ## List the fraud model versions with their stage, metrics, data hash and training commit
	@$(PY) -m pipelines.models list

promote: venv ## Make fraud version V production (make promote V=fraud-...); the previous production is archived
	@test -n "$(V)" || { echo "usage: make promote V=<version> (see make models)"; exit 2; }
	@$(PY) -m pipelines.models promote "$(V)"

rollback: venv ## The previous fraud production version decides again
	@$(PY) -m pipelines.models rollback

shadow: venv ## Score fraud version V beside production on every batch, deciding nothing (make shadow V=fraud-...)
	@$(PY) -m pipelines.models shadow "$(V)"

ab: venv ## A/B: fraud version V decides for FRACTION of the customers by a stable hash (make ab V=... FRACTION=0.1; V=off ends it)
	@$(PY) -m pipelines.models ab "$(V)" $(FRACTION)

# The fraud job's run-time thresholds and hard rules (pipelines/rules.py): the next version on topics.fraud_control.
.PHONY: rules
rules: venv ## Show the fraud job's rule set in force; REVIEW=r DECLINE=d new thresholds, SET=file.json a new rule set
	@if [ -n "$(SET)" ]; then $(PY) -m pipelines.rules set "$(SET)"; \
	elif [ -n "$(REVIEW)$(DECLINE)" ]; then $(PY) -m pipelines.rules thresholds --review "$(REVIEW)" --decline "$(DECLINE)"; \
	else $(PY) -m pipelines.rules show; fi

# ------------------------------------------------------------------------------------------------- run / stop
.PHONY: run stop status
# CLUSTER=1: the fraud job runs on the standalone Flink cluster (mk/cluster.mk) at parallelism 2, not a MiniCluster.
CLUSTER ?=
run: install model ## Start Kafka, Redis, topics, the Flink jobs, producers, dashboard and monitoring (CLUSTER=1: fraud job on the standalone cluster; SECURE=1: SASL_SSL broker with ACLs)
	@$(PY) -m infra.stack up $(if $(filter 1 yes true,$(CLUSTER)),--cluster) $(if $(filter 1 yes true,$(SECURE)),--secure)

stop: ## Stop every process the make targets started: `make run`'s, dashboard-up, lag-exporter-up, prometheus-up, cluster-up (the cluster job cancelled first)
	@$(PY) -m infra.stack down

status: ## Show what runs where
	@$(PY) -m infra.stack status

# ------------------------------------------------------------------------------------------------------ tests
.PHONY: test test-unit test-integration
PYTEST := $(PY) -m pytest
test: install model ## Install what is missing (and train the models if none), then run every test against real services
	$(PYTEST) tests -p no:cacheprovider

test-unit: venv ## Fast tests, no broker
	$(PYTEST) tests/unit -q

test-integration: install ## Tests against a real Kafka broker, Redis and PyFlink jobs
	$(PYTEST) tests/integration -q

# -------------------------------------------------------------------------------------------------------- bench
.PHONY: bench
bench: install model ## Benchmarks (fraud job end to end, scorer, sentiment); results with machine and settings in bench-results/
	$(PY) -m infra.bench.run --out bench-results

# --------------------------------------------------------------------------------------------------------- docs
.PHONY: docs
docs: venv ## Regenerate docs/configuration.md (from the config classes) and the README's results (from docs/bench/)
	$(PY) -m pipelines.configdoc
	$(PY) -m infra.bench.report

.PHONY: clean
clean: ## Remove build outputs and local state (.run), keep caches
	rm -rf .run build cpp_ext/build .pytest_cache

# Areas add their own targets in mk/*.mk.
-include mk/*.mk
