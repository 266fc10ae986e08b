"""The WebSocket feed's burst path without services: frames parsed fast with the ``json`` module's
answers, events turned into the same contract messages, valid ones encoded to the same values."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from stockpipe import contract
from stockpipe.producer.websocket import _ENCODER, am_message, decode_frame
from stockpipe.sources.polygon import Bar

AM = {"ev": "AM", "sym": "AAPL", "v": 1200, "av": 99000, "op": 190.0, "vw": 190.2, "o": 190.1, "c": 190.3,
      "h": 190.4, "l": 190.0, "a": 190.05, "z": 12, "s": 1795804740000, "e": 1795804800000}  # fmt: skip
FETCHED_AT = datetime(2026, 11, 27, 18, 40, 1, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "event",
    [AM, {**AM, "o": 190, "vw": None}, {**AM, "sym": 5, "c": "x"}, {k: v for k, v in AM.items() if k != "h"}],
    ids=["valid", "integer-open-no-vwap", "odd-types", "no-high"],
)
def test_am_message_is_the_bar_message_of_the_event_with_cached_texts(event):
    bar = Bar(event.get("sym"), datetime.fromtimestamp(event["s"] / 1000, UTC), event.get("o"), event.get("h"),
              event.get("l"), event.get("c"), event.get("v"), event.get("vw"), None)  # fmt: skip
    expected = bar.to_message("simulator-websocket", FETCHED_AT)
    cache: dict[int, str] = {}
    fetched_text = contract.format_fetched_at(FETCHED_AT)
    assert am_message(event, "simulator-websocket", FETCHED_AT) == expected
    assert am_message(event, "simulator-websocket", fetched_text, cache) == expected
    assert am_message(event, "simulator-websocket", fetched_text, cache) == expected  # from the cache
    assert list(am_message(event, "s", fetched_text, cache)) == list(expected)  # same key order
    assert cache == {event["s"]: expected["ts"]}


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps([AM, {"ev": "status", "status": "success", "message": "subscribed to: AM.*"}]),
        '[{"ev":"AM","o":NaN,"c":Infinity}]',  # msgspec refuses, json reads
        '[{"ev":"AM","o":1e400,"v":100000000000000000000000}]',
        '[{"ev":"AM","sym":"\\ud800"}]',
        '{"ev":"AM","sym":"AAPL","sym":"MSFT"}',
        "42",
        b'[{"ev":"AM","sym":"AAPL"}]',
    ],
    ids=["events", "nan", "huge-numbers", "lone-surrogate", "repeated-key", "scalar", "bytes"],
)
def test_a_frame_is_read_as_the_json_module_reads_it(frame):
    got, expected = decode_frame(frame), json.loads(frame)
    assert repr(got) == repr(expected)  # repr: NaN equal to NaN, int stays int


@pytest.mark.parametrize("frame", ['[{"ev":"AM","sym":"AAPL"', "", "[1,]", b"\xff\xfe"])
def test_a_frame_that_is_not_json_is_a_value_error(frame):
    with pytest.raises(ValueError):
        json.loads(frame)
    with pytest.raises(ValueError):
        decode_frame(frame)


@pytest.mark.parametrize("price", [190.1, 190, 0.1, 1e-7, 123456789.123, 1e16, 2.5e-300, 999999999.99])
def test_a_valid_message_is_encoded_to_the_same_values(price):
    message = am_message(
        {**AM, "o": price, "h": price, "l": price, "c": price, "vw": price}, "simulator-ws", FETCHED_AT
    )
    fast, reference = json.loads(_ENCODER.encode(message)), json.loads(contract.encode(message))
    assert fast == reference == message
    assert [type(v) for v in fast.values()] == [type(v) for v in reference.values()]
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in fast.values())


@pytest.mark.parametrize(
    "start_ms", [10**20, 10**400, -(10**15), -1, 253402300800000], ids=["1e20", "1e400", "-1e15", "-1", "year-10000"]
)
def test_a_start_time_beyond_the_calendar_is_a_value_error(start_ms):
    with pytest.raises(ValueError, match="is not a time from 1970 to 9999"):
        am_message({**AM, "s": start_ms}, "simulator-websocket", FETCHED_AT)


@pytest.mark.parametrize("frame", ["[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_a_frame_nested_too_deeply_is_a_value_error(frame):
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_frame(frame)
