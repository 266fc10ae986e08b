import json
import math

import pytest

from stockpipe import contract


def bar(**changes):
    message = {
        "v": 1, "symbol": "AAPL", "ts": "2026-11-24T14:31:00Z", "open": 10.0, "high": 11.0, "low": 9.5,
        "close": 10.5, "volume": 1200, "vwap": 10.2, "trades": 31, "source": "simulator",
        "fetched_at": "2026-11-24T14:32:01.123456Z",
    }
    message.update(changes)
    return message


def test_valid_bar_has_no_reason():
    assert contract.invalid_reason(bar()) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"high": 10.4}, "high is below"),
        ({"low": 10.1}, "low is above"),
        ({"volume": -1}, "volume is negative"),
        ({"close": math.nan}, "close is not a finite number"),
        ({"open": math.inf}, "open is not a finite number"),
        ({"close": "10.5"}, "close is not a finite number"),
        ({"ts": "2026-11-24T14:31:30Z"}, "minute boundary"),
        ({"ts": "yesterday"}, "invalid ts"),
        ({"symbol": "aapl; DROP TABLE"}, "invalid symbol"),
        ({"v": 2}, "version"),
        ({"open": True}, "open is not a finite number"),
        ({"open": 1e300, "high": 1e300, "close": 1e300}, "a price is above 1e+09"),
        ({"vwap": 2e9}, "a price is above"),
        ({"volume": 1e300}, "volume is above 1e+15"),
    ],
)
def test_invalid_bars_say_why(changes, reason):
    assert reason in contract.invalid_reason(bar(**changes))


def test_dead_letter_keeps_raw_bytes_error_and_origin():
    raw = b"\xff\xfe not utf-8"
    letter = json.loads(contract.dead_letter(raw, "bad json", {"topic": "t", "partition": 1, "offset": 7}))
    assert letter["raw_encoding"] == "base64"
    assert letter["error"] == "bad json" and letter["origin"]["offset"] == 7
    import base64

    assert base64.b64decode(letter["raw"]) == raw
