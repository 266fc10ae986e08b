"""Fixtures of the Spark tests (streaming and backfill): one SparkSession for the whole run."""

from __future__ import annotations

import pytest

from stockpipe.streaming.spark import spark_session


@pytest.fixture(scope="session")
def spark(base_settings):
    """A local SparkSession (JVM start-up costs ~10 s: once per test run, not per module)."""
    session = spark_session(base_settings, app_name="stockpipe-tests")
    yield session
    session.stop()


@pytest.fixture
def stream_settings(settings, tmp_path):
    """The test's settings with its own checkpoint, and small micro-batches (several per run)."""
    return settings.model_copy(
        update={"stream_checkpoint": str(tmp_path / "checkpoint"), "stream_max_offsets_per_trigger": 300}
    )
