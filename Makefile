# Two entry points that work on a fresh machine with Python 3.11+ and make:
#   make demo   sets up .venv and runs the whole pipeline offline on the bundled sample data
#   make test   sets up .venv and runs linters, type checks and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench bench-relevance clean container-check

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/newsletter demo

lint: $(BIN)/.installed
	$(BIN)/ruff check newsletter tests scripts bench
	$(BIN)/ruff format --check newsletter tests scripts bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-output test-artifacts .pytest_cache .mypy_cache .ruff_cache

# Throughput of the real send path into Postfix's smtp-sink vs smtp-source's ceiling.
# BENCH_ARGS="--subscribers 10000 --database postgresql" for a quick run.
bench: $(BIN)/.installed
	$(BIN)/python -m bench.throughput $(BENCH_ARGS)

# Relevance of keywords, BM25, embeddings and the hybrid on bench/relevance_set, and the cost of
# selecting a day for 100,000 readers. BENCH_ARGS="--readers 10000" or "--skip-scale" for less.
bench-relevance: $(BIN)/.installed
	$(BIN)/python -m bench.relevance $(BENCH_ARGS)

# Builds the Dockerfile with podman and runs the image and the compose services for real
# (scripts/container_check.sh); needs root for podman and the machine's PostgreSQL.
$(BIN)/.container-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[container]'
	touch $@

container-check: $(BIN)/.container-installed
	PODMAN_COMPOSE=$(BIN)/podman-compose scripts/container_check.sh
