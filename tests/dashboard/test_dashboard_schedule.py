"""The overview tiles say how stale each symbol is by design of the producer's polling plan."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from stockpipe.producer import schedule
from tests.dashboard.conftest import APP, WATCHLIST

pytestmark = pytest.mark.integration


def captions() -> str:
    st.cache_data.clear()  # the published plan is cached for 30 s
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return "\n".join(str(e.value) for e in at.caption)


def test_each_tile_says_how_often_its_symbol_is_polled_by_design(seeded, redis_client):
    assert "polled every" not in captions()  # no planned producer published a plan

    plan = schedule.PollingPlan(tuple(WATCHLIST), 1)  # one call a minute for two symbols: rotation
    stale = plan.stale_by_design()
    schedule.publish(redis_client, plan, stale, policy="planned", limit=1)
    text = captions()
    for symbol in WATCHLIST:
        design = stale[symbol]
        assert design["every_s"] == pytest.approx(120, rel=0.05)  # every other minute, a deferral in 50
        line = f"polled every {design['every_s']:.0f} s · ~{design['mean_s']:.0f} s after the close"
        assert f"{line} (≤ {design['max_s']:.0f} s)" in text
