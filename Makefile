# Stockade: `make run` (server, embedded default) and `make test` (the whole suite).
PY ?= python3.11
HOST ?= 127.0.0.1
PORT ?= 8080
STOCKADE_HOME ?= ./var
export STOCKADE_HOME
export UV_PYTHON_DOWNLOADS := never
export UV_NO_CONFIG := 1
export UV_COMPILE_BYTECODE := 1
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: venv run test lint typecheck unit bench clean

venv: .venv/.synced

.tools/bin/uv:
	$(PY) -m venv .tools
	.tools/bin/pip install --quiet --isolated uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PY)
	@touch $@

run: venv
	@test -f "$(STOCKADE_HOME)/stockade.toml" || \
		STOCKADE_HOST=$(HOST) STOCKADE_PORT=$(PORT) .venv/bin/stockade init
	.venv/bin/stockade serve --host $(HOST) --port $(PORT)

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: venv
	.venv/bin/mypy --strict

# Tests run on every core (pytest-xdist): most of their time is real servers and clients
# starting up, and each test has its own home, ports and PostgreSQL database.
TEST_PROCS ?= 2
test: lint typecheck
	.venv/bin/python -m pytest -q -n $(TEST_PROCS) --durations=25

unit: venv
	.venv/bin/python -m pytest -q tests/unit

bench: venv
	.venv/bin/python bench/run.py
	.venv/bin/python bench/vulndb.py
	.venv/bin/python bench/policy.py
	.venv/bin/python bench/threats.py
	.venv/bin/python bench/conda.py

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
