"""The compiled Python engine (:mod:`stockpipe.contract_compiled`) gives the interpreter's reason
(:func:`stockpipe.contract.message_reason`) for every contract case and for random bars."""

from __future__ import annotations

import json
import math
import random
import time
from datetime import timedelta

import pytest

from stockpipe import contract
from stockpipe.contract import Policy
from stockpipe.contract_compiled import compiled_check
from tests.unit.test_contract import ANY_SYMBOL, CASES, GOOD, NOW, POLICY, RETENTION_30D

NOW_US = contract.to_micros(NOW)
POLICIES = [POLICY, ANY_SYMBOL, RETENTION_30D, Policy(symbols=frozenset({"AAPL"}), retention=timedelta(days=1))]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_contract_case_gets_the_interpreters_reason(case):
    value = contract.decode(case.value)
    assert compiled_check(case.policy)(value, NOW_US) == case.reason == contract.message_reason(value, case.policy, NOW)
    if case.message is not None:
        assert compiled_check(case.policy)(case.message, NOW_US) == case.reason


ODD_VALUES = [
    None, True, False, 0, -1, 1, 1.0, 0.0, -0.0, 2**31, 2**53 + 1, 10**20, -(10**400), 1.5, 1e9, 1e9 + 1, 2e9,
    math.nan, math.inf, -math.inf, "NaN", "Infinity", "-INF", "1", "", "AAPL", "aapl", "ZZZQ", "A" * 13, "BRK.B",
    "2026-11-24T14:31:00Z", "2026-11-24T14:31:30Z", "2026-02-30T14:31:00Z", "2999-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z", "2026-11-24T14:31:00.5+00:00", "2026-11-24T24:00:00Z", "simulator", "1simulator",
    [], {}, [1], {"a": 1},
]  # fmt: skip


def test_random_bars_get_the_interpreters_reason():
    rng = random.Random(14)
    fields = list(GOOD)
    for _ in range(20_000):
        message = dict(GOOD)
        for name in rng.sample(fields, rng.randint(1, 3)):
            choice = rng.random()
            if choice < 0.1:
                message.pop(name, None)
            elif choice < 0.4:
                message[name] = rng.choice(ODD_VALUES)
            else:  # a plausible number near the bounds
                message[name] = rng.choice([rng.uniform(-1, 12), rng.randint(-2, 12), rng.uniform(9.4, 11.1)])
        for policy in POLICIES:
            expected = contract.message_reason(message, policy, NOW)
            assert compiled_check(policy)(message, NOW_US) == expected, (policy, message)


def test_a_json_round_trip_and_non_objects():
    for value in (GOOD, [GOOD], "x", 1, None):
        decoded = json.loads(json.dumps(value))
        assert compiled_check(POLICY)(decoded, NOW_US) == contract.message_reason(decoded, POLICY, NOW)


def test_compiled_check_is_much_faster_than_the_interpreter():
    check = compiled_check(ANY_SYMBOL)
    started = time.process_time()
    for _ in range(5000):
        contract.message_reason(GOOD, ANY_SYMBOL, NOW)
    interpreted = time.process_time() - started
    started = time.process_time()
    for _ in range(5000):
        check(GOOD, NOW_US)
    compiled = time.process_time() - started
    assert compiled * 3 < interpreted, (compiled, interpreted)
