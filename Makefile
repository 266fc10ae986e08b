# stockpipe — the README's commands. Everything runs natively on 127.0.0.1 (no Docker needed).
SHELL := /bin/bash
STACK := infra/stack.sh
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: up down status logs install test test-reliability test-unit bench bench-report lock clean

up:            ## install what is missing and start the whole stack (FEED=websocket|rest: the producer's feed, kept in .env)
	@$(if $(FEED),STOCKPIPE_FEED=$(FEED) )$(STACK) up

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

bench:         ## every benchmark (~15-20 min), then one summary table + JSON + docs/benchmarks.md (one: make bench BENCH=bench/backfill.py)
	@bash infra/run-bench.sh $(BENCH)

bench-report:  ## the summary table of the stored bench/results/*.json; rewrites docs/benchmarks.md's summary block
	@$(PY) bench/report.py --markdown

lock:          ## recompile requirements.txt from requirements.in
	@.venv/bin/uv pip compile requirements.in -o requirements.txt --python-version 3.11

clean: down    ## stop and delete all local data (.local/)
	rm -rf .local
