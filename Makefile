# stockpipe — the README's commands. Everything runs natively on 127.0.0.1 (no Docker needed).
SHELL := /bin/bash
STACK := infra/stack.sh
PY := .venv/bin/python
PYTEST_ARGS ?=
# Services the test suite needs; the suite starts its own simulators and producers.
TEST_SERVICES := postgres redis kafka

.PHONY: up down status logs install test test-unit bench lock clean

up:            ## install what is missing and start the whole stack
	@$(STACK) up

down:          ## stop every component
	@$(STACK) down

status:        ## one line per component: state, pid, port
	@$(STACK) status

logs:          ## follow the logs (make logs C=kafka for one component)
	@$(STACK) logs $(C)

install:       ## venv, JVM jars and Debian packages only
	@$(STACK) install

test:          ## install, start the services the tests need, run pytest, stop what it started
	@bash infra/run-tests.sh $(PYTEST_ARGS)

test-reliability: ## the whole fault-injection suite: restarts Kafka, PostgreSQL, stops Redis 2 min (~15 min)
	@bash infra/run-tests.sh tests/reliability -m reliability --redis-outage-s=120 $(PYTEST_ARGS)

test-unit:     ## the tests that need no service
	@$(STACK) install && $(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench:         ## run every benchmark in bench/ in turn (one: make bench BENCH=bench/dashboard.py); JSON in bench/results/
	@$(STACK) up $(TEST_SERVICES)
	@rc=0; for script in $(or $(BENCH),$(wildcard bench/*.py)); do \
	  echo "==> $$script"; $(PY) $$script || { rc=1; echo "$$script failed" >&2; }; \
	done; exit $$rc

lock:          ## recompile requirements.txt from requirements.in
	@.venv/bin/uv pip compile requirements.in -o requirements.txt --python-version 3.11

clean: down    ## stop and delete all local data (.local/)
	rm -rf .local
