"""The benchmarks' pub/sub reader (bench/websocket_feed.py ``BarArrivals``, used by bench/market_live.py's
close → Redis) on the real Redis: every message of a burst is recorded and decoded, each stamped when
its bytes were read from the socket — per read, not after parsing each message (the former reader
stamped after redis-py's parse and ``json.loads`` of every message before it: the last messages of a
10,000-message burst came out late)."""

from __future__ import annotations

import json
import time
import uuid

from bench.websocket_feed import BarArrivals, resp_value

TS_MS = 1_800_000_000_000


def test_a_burst_is_recorded_whole_each_message_stamped_by_the_read_that_brought_it(base_settings, redis_client):
    channel = f"test-bench-arrivals-{uuid.uuid4().hex[:8]}"
    messages = [json.dumps({"symbol": f"S{i:05d}", "ts_ms": TS_MS, "pad": "x" * (i % 700)}) for i in range(5000)]
    messages.append(json.dumps({"symbol": "BIG", "ts_ms": TS_MS + 60_000, "pad": "y" * 200_000}))  # > a read
    messages += ["not json", json.dumps({"ts_ms": TS_MS}), json.dumps({"symbol": "S00000", "ts_ms": TS_MS + 1})]
    arrivals = BarArrivals(base_settings, channel)
    try:
        pipe = redis_client.pipeline(transaction=False)
        for message in messages:
            pipe.publish(channel, message)
        pipe.publish(f"{channel}-other", json.dumps({"symbol": "OTHER", "ts_ms": TS_MS}))  # not subscribed
        started = time.time()
        assert pipe.execute()[: len(messages)] == [1] * len(messages)
        deadline = time.time() + 30
        while arrivals.messages < len(messages) and time.time() < deadline:
            time.sleep(0.05)  # counted as parsed: the socket went idle once the burst was read
    finally:
        arrivals.close()
    closed = time.time()

    assert arrivals.messages == len(messages)
    assert set(arrivals.first) == {(f"S{i:05d}", TS_MS // 1000) for i in range(5000)} | {("BIG", TS_MS // 1000 + 60)}
    assert arrivals.undecodable == 2  # not JSON; no symbol
    # (S00000, same second) again: the first arrival stays
    stamps = list(arrivals.first.values())
    assert all(started - 5 <= at <= closed for at in stamps)
    # stamped per read of the socket: messages read together share its stamp; in publish order
    assert len(set(stamps)) <= arrivals.chunks < len(messages)
    ordered = [arrivals.first[(f"S{i:05d}", TS_MS // 1000)] for i in range(5000)]
    assert ordered == sorted(ordered)
    assert arrivals.first[("BIG", TS_MS // 1000 + 60)] >= ordered[-1]


def test_resp_values_whole_or_incomplete():
    frame = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"
    assert resp_value(frame, 0) == ([b"message", b"ch", b"hello"], len(frame))
    for cut in range(len(frame)):  # a frame split across reads: nothing until its last byte
        assert resp_value(frame[:cut], 0) is None
    push = b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    assert resp_value(push + frame, 0) == ([b"subscribe", b"ch", 1], len(push))
    assert resp_value(b"$-1\r\n+OK\r\n", 0) == (None, 5)
    assert resp_value(b"$-1\r\n+OK\r\n", 5) == (b"OK", 10)
