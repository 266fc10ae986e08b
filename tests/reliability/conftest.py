"""The fault-injection suite's options, its selection in `make test`, and its results table.

`make test` runs the short subset only (no service is stopped); `make test-reliability` runs all of
it (``-m reliability``). The scenarios that stop Kafka, PostgreSQL or Redis are marked ``slow`` and
are deselected here unless the ``-m`` expression names ``reliability`` (or
``STOCKPIPE_RELIABILITY_FULL=1``): they would disturb any other test running at the same time; so
are the kill -9 and checkpoint-reset scenarios, whose faults the integration suite covers in
`make test` (test_stream_indicators), to keep it within 15 minutes. The suite's other ``slow`` tests
keep running in `make test`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability import harness

HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability", "fault-injection suite (tests/reliability)")
    group.addoption("--redis-outage-s", type=float, default=10.0,
                    help="how long Redis stays stopped (make test-reliability: 120)")  # fmt: skip
    group.addoption("--service-down-s", type=float, default=5.0,
                    help="how long Kafka / PostgreSQL stay stopped in their restart scenarios")  # fmt: skip


def _full_run(config: pytest.Config) -> bool:
    return "reliability" in (config.option.markexpr or "") or os.environ.get("STOCKPIPE_RELIABILITY_FULL") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _full_run(config):
        return
    keep, drop = [], []
    for item in items:
        inside = HERE in Path(str(item.path)).resolve().parents
        (drop if inside and item.get_closest_marker("slow") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if harness.RESULTS:
        terminalreporter.write_sep("=", "fault-injection results")
        terminalreporter.write_line(harness.markdown_table(harness.RESULTS))


@pytest.fixture
def redis_outage_s(request) -> float:
    return request.config.getoption("--redis-outage-s", default=10.0)


@pytest.fixture
def service_down_s(request) -> float:
    return request.config.getoption("--service-down-s", default=5.0)


# The shared SparkSession of the Spark tests (getOrCreate: the same session as tests/integration's).
from tests.integration.conftest import spark  # noqa: E402, F401
