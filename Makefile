# Orca: `make run` serves Orca on http://127.0.0.1:8000; `make test` runs every test.
SHELL := /bin/bash
# The first interpreter that really runs and is 3.11 or newer (pyenv shims may not).
ifndef PYTHON
PYTHON := $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { command -v $$p; break; }; \
	done)
endif
VENV ?= .venv
BIN := $(VENV)/bin
PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: run test test-unit test-reliability lint bench venv services postgres sshd redis clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@[ -n "$(PYTHON)" ] || { echo "Orca needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: venv
	$(BIN)/orca serve

# Everything the tests need, from nothing: PostgreSQL and Redis reachable, OpenSSH's sshd
# installed.
services: postgres sshd redis

postgres:
	@if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		echo "starting PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -n 1) main start; \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	fi
	@pg_isready -h 127.0.0.1 -p 5432

sshd:
	@if [ ! -x /usr/sbin/sshd ]; then \
		echo "installing openssh-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server; \
	fi
	@/usr/sbin/sshd -V 2>&1 | head -n 1 || true

# Redis holds the rate-limit counters that several API processes share.
redis:
	@if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then \
		if ! command -v redis-server >/dev/null; then \
			echo "installing redis-server"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
		fi; \
		echo "starting Redis"; \
		redis-server --bind 127.0.0.1 --port 6379 --save '' --daemonize yes; \
		for i in $$(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done; \
	fi
	@redis-cli -h 127.0.0.1 -p 6379 ping

test: venv services lint
	ORCA_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/pytest

test-unit: venv
	$(BIN)/pytest tests/unit

# The reliability suite at full size (~10 min): 200 clients for 60 s on 20 OpenSSH hosts, each
# fault under load, more hostile input; `make test` runs a fast subset. Figures: docs/reliability.md
test-reliability: venv services
	ORCA_TEST_POSTGRES_URL=$(PG_URL) ORCA_RELIABILITY=full $(BIN)/pytest tests/reliability -s

# Every benchmark against its baselines, then docs/benchmarks.md and docs/fanout.png (~8 min).
bench: venv services
	$(BIN)/pip install --quiet -e '.[bench]'
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/python bench/report.py

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
