"""The simulator's /_admin endpoints need the admin token, and their answers never carry an API key
(least privilege: DESIGN.md invariant 7)."""

from __future__ import annotations

import httpx
import pytest

from stockpipe.sources.simulator import start_in_thread
from stockpipe.sources.simulator.app import ADMIN_TOKEN_HEADER, key_id

SECRET_KEY = "pk-Very-Secret-123"
ADMIN_GETS = ["/_admin/health", "/_admin/stats", "/_admin/requests", "/_admin/faults", "/_admin/docs",
              "/_admin/openapi.json"]  # fmt: skip


@pytest.fixture(scope="module")
def simulator():
    with start_in_thread(seed=3) as running:
        yield running


@pytest.mark.parametrize("path", ADMIN_GETS)
def test_admin_without_or_with_a_wrong_token_is_refused(simulator, path):
    assert httpx.get(simulator.url + path).status_code in (401, 403)
    wrong = httpx.get(simulator.url + path, headers={ADMIN_TOKEN_HEADER: simulator.admin_token + "x"})
    assert wrong.status_code in (401, 403)


def test_admin_writes_without_a_token_change_nothing(simulator):
    before = simulator.state.faults.describe()
    assert httpx.post(f"{simulator.url}/_admin/faults", json={"status_5xx": 5}).status_code in (401, 403)
    assert httpx.post(f"{simulator.url}/_admin/reset").status_code in (401, 403)
    assert httpx.delete(f"{simulator.url}/_admin/faults").status_code in (401, 403)
    assert httpx.post(f"{simulator.url}/_admin/clock", json={"offset_s": 3600}).status_code in (401, 403)
    assert simulator.state.faults.describe() == before


def test_admin_answers_never_contain_an_api_key(simulator):
    polygon_call = httpx.get(f"{simulator.url}/v2/aggs/ticker/AAPL/prev", params={"apiKey": SECRET_KEY})
    assert polygon_call.status_code == 200
    answers = [httpx.get(simulator.url + path, headers=simulator.admin_headers) for path in ADMIN_GETS]
    answers.append(
        httpx.get(f"{simulator.url}/_admin/requests", params={"api_key": SECRET_KEY}, headers=simulator.admin_headers)
    )
    for answer in answers:
        assert answer.status_code == 200, answer.request.url
        assert SECRET_KEY not in answer.text, answer.request.url
    stats = answers[1].json()["keys"]
    assert stats[key_id(SECRET_KEY)]["requests"] >= 1
    assert [row["key_id"] for row in answers[-1].json()["requests"]] == [key_id(SECRET_KEY)]


def test_a_simulator_without_a_token_keeps_admin_closed():
    with start_in_thread(admin_token="") as closed:
        assert httpx.get(f"{closed.url}/_admin/health").status_code in (401, 403)
        assert httpx.get(f"{closed.url}/_admin/health", headers={ADMIN_TOKEN_HEADER: ""}).status_code in (401, 403)
