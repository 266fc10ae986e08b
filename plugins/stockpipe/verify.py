"""Verification consumer: what is in the bars topic, per symbol.

``python -m stockpipe.verify [--topic T] [--since 10m] [--calendar demo|nyse] [--max-span-days N]``

Reads the topic from the beginning (or from ``--since`` ago) up to its current end and reports per
symbol: bars, first/last ts, gaps (minutes the clock/calendar says should have a bar between the
first and the last), duplicates (the same bar — same minute, same values — sent more than once),
corrections (same minute re-sent with other values: allowed by the contract) and lag (now − last
bar). Exits 1 when any symbol has a gap or a duplicate.

Only bars that pass the contract are judged (:mod:`stockpipe.contract`, the same rules and policy
as the stream: watchlist plus market.symbols, the ts window); the others are counted as invalid,
per reason — they are the stream's dead letters. A symbol's bars may span at most
``--max-span-days`` (default 31, at most 366): beyond that verify stops with a sentence instead of
listing every expected minute.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from stockpipe import contract
from stockpipe.clients import kafka_consumer
from stockpipe.config import Settings, load_settings

#: Default and most days between a symbol's first and last bar that verify lists minutes for.
DEFAULT_MAX_SPAN_DAYS = 31
MAX_SPAN_DAYS = 366


class SpanTooLong(SystemExit):
    """The bars span more than verify checks: a sentence saying which, and how to narrow it."""


@dataclass
class SymbolReport:
    symbol: str
    minutes: dict[datetime, set[str]] = field(default_factory=lambda: defaultdict(set))
    messages: int = 0
    duplicates: int = 0
    gaps: list[datetime] = field(default_factory=list)

    @property
    def corrections(self) -> int:
        return sum(len(v) - 1 for v in self.minutes.values())

    @property
    def first(self) -> datetime | None:
        return min(self.minutes) if self.minutes else None

    @property
    def last(self) -> datetime | None:
        return max(self.minutes) if self.minutes else None


class Reports(dict[str, SymbolReport]):
    """Symbol → report, plus ``invalid``: how many messages broke the contract, per reason."""

    def __init__(self) -> None:
        super().__init__()
        self.invalid: Counter[str] = Counter()


def _check_span(symbol: str | None, first: datetime, last: datetime, max_span_days: int) -> None:
    if last - first > timedelta(days=max_span_days):
        what = f"{symbol}'s valid bars" if symbol else "The minutes asked for"
        raise SpanTooLong(
            f"{what} span {(last - first).days} days ({contract.format_ts(first)} to "
            f"{contract.format_ts(last)}), more than the {max_span_days} days verify lists minutes for; "
            f"read less with --since, or raise --max-span-days (at most {MAX_SPAN_DAYS})."
        )


def expected_minutes(first: datetime, last: datetime, calendar: str) -> list[datetime]:
    """Bar starts between first and last (inclusive) by the demo clock (every minute) or NYSE;
    refuses (:class:`SpanTooLong`) a span over :data:`MAX_SPAN_DAYS`, whatever the caller."""
    _check_span(None, first, last, MAX_SPAN_DAYS)
    if calendar == "demo":
        count = int((last - first).total_seconds() // 60) + 1
        return [first + timedelta(minutes=i) for i in range(count)]
    import exchange_calendars as xcals

    cal = xcals.get_calendar("XNYS")
    minutes = cal.minutes_in_range(pd.Timestamp(first), pd.Timestamp(last))
    return [m.to_pydatetime() for m in minutes]


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if not match:
        raise SystemExit(f"--since {text!r}: use a number and s/m/h/d, e.g. 10m.")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})


def read_topic(
    settings: Settings, topic: str, since: datetime | None, timeout_s: float = 30, *, raw: bool = False
) -> list[Any]:
    """The topic's values: decoded JSON (records that are not JSON are skipped), or with ``raw``
    every record's value bytes (None for a tombstone), for :func:`build_reports` to judge."""
    consumer = kafka_consumer(settings, "verify", **{"group.id": f"stockpipe-verify-{uuid.uuid4().hex[:8]}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise SystemExit(f"Kafka topic {topic!r} does not exist at {settings.kafka_bootstrap}.")
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        if since is not None:
            for tp in partitions:
                tp.offset = int(since.timestamp() * 1000)
            partitions = consumer.offsets_for_times(partitions, timeout=10)
        else:
            for tp in partitions:
                tp.offset = OFFSET_BEGINNING
        ends = {}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            ends[tp.partition] = high
        pending = {tp.partition for tp in partitions if ends[tp.partition] > 0 and tp.offset != ends[tp.partition]}
        consumer.assign(partitions)
        values: list[dict] = []
        deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
        while pending and datetime.now(UTC) < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    pending.discard(msg.partition())
                continue
            if msg.offset() >= ends[msg.partition()] - 1:
                pending.discard(msg.partition())
            if msg.offset() < ends[msg.partition()]:
                if raw:
                    values.append(msg.value())
                    continue
                try:
                    values.append(json.loads(msg.value()))
                except (TypeError, ValueError, RecursionError):
                    continue  # not a bar; the stream sends such records to the DLQ
        return values
    finally:
        consumer.close()


def build_reports(
    messages: list[Any],
    calendar: str,
    policy: contract.Policy | None = None,
    *,
    now: datetime | None = None,
    max_span_days: int = DEFAULT_MAX_SPAN_DAYS,
) -> Reports:
    """Per-symbol reports of the messages (decoded values, or raw bytes as ``read_topic(raw=True)``
    gives them) that pass the contract under ``policy`` (default: the process's settings); the
    others are counted in ``.invalid``. Raises :class:`SpanTooLong` when a symbol's valid bars span
    more than ``max_span_days``."""
    if max_span_days > MAX_SPAN_DAYS:
        raise SpanTooLong(f"--max-span-days {max_span_days}: verify lists minutes for at most {MAX_SPAN_DAYS} days.")
    if policy is None:
        from stockpipe.config import get_settings

        policy = contract.Policy.from_settings(get_settings())
    now = now or datetime.now(UTC)
    reports = Reports()
    for item in messages:
        message = contract.decode(item) if item is None or isinstance(item, bytes | str) else item
        reason = contract.message_reason(message, policy, now)
        if reason:
            reports.invalid[reason] += 1
            continue
        report = reports.setdefault(message["symbol"], SymbolReport(message["symbol"]))
        ts = contract.parse_ts(message["ts"])
        values = json.dumps(
            {k: message.get(k) for k in (*contract.PRICE_FIELDS, "volume", "vwap", "trades")}, sort_keys=True
        )
        report.messages += 1
        if values in report.minutes[ts]:
            report.duplicates += 1
        report.minutes[ts].add(values)
    for report in reports.values():
        _check_span(report.symbol, report.first, report.last, max_span_days)
    for report in reports.values():
        if report.minutes:
            have = set(report.minutes)
            report.gaps = [m for m in expected_minutes(report.first, report.last, calendar) if m not in have]
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stockpipe.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--topic", help="topic to read (default: STOCKPIPE_KAFKA_TOPIC)")
    parser.add_argument("--since", help="only messages written in the last N s/m/h/d, e.g. 10m")
    parser.add_argument(
        "--calendar",
        choices=["demo", "nyse"],
        help="which minutes must have bars (default: the simulator's clock, nyse for Polygon)",
    )
    parser.add_argument("--max-span-days", type=int, default=DEFAULT_MAX_SPAN_DAYS,
                        help=f"most days a symbol's bars may span (default {DEFAULT_MAX_SPAN_DAYS}, "
                        f"at most {MAX_SPAN_DAYS})")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.max_span_days <= MAX_SPAN_DAYS:
        raise SystemExit(f"--max-span-days {args.max_span_days}: use 1 to {MAX_SPAN_DAYS}.")
    settings = load_settings()
    topic = args.topic or settings.kafka_topic
    calendar = args.calendar or settings.calendar_mode

    since = parse_since(args.since)
    # the stream's policy: the watchlist plus market.symbols (read now)
    policy = contract.Policy.load(settings)
    messages = read_topic(settings, topic, since, raw=True)
    reports = build_reports(messages, calendar, policy, max_span_days=args.max_span_days)
    now = datetime.now(UTC)
    rows = []
    for symbol in sorted(reports):
        r = reports[symbol]
        rows.append(
            {
                "symbol": symbol,
                "bars": len(r.minutes),
                "messages": r.messages,
                "first": contract.format_ts(r.first),
                "last": contract.format_ts(r.last),
                "gaps": len(r.gaps),
                "duplicates": r.duplicates,
                "corrections": r.corrections,
                "lag_s": round((now - r.last).total_seconds() - 60, 1),
                "first_gaps": [contract.format_ts(g) for g in r.gaps[:3]],
            }
        )
    bad = [r for r in rows if r["gaps"] or r["duplicates"]]
    if args.json:
        print(json.dumps({"topic": topic, "calendar": calendar, "symbols": rows, "invalid": dict(reports.invalid),
                          "ok": not bad}, indent=2))  # fmt: skip
    else:
        print(f"topic {topic} ({len(messages)} messages, calendar {calendar})")
        print(f"{'symbol':<8} {'bars':>6} {'first':<20} {'last':<20} {'gaps':>5} {'dups':>5} {'corr':>5} {'lag_s':>7}")
        for r in rows:
            print(
                f"{r['symbol']:<8} {r['bars']:>6} {r['first']:<20} {r['last']:<20} {r['gaps']:>5} "
                f"{r['duplicates']:>5} {r['corrections']:>5} {r['lag_s']:>7}"
                + (f"  first gaps: {', '.join(r['first_gaps'])}" if r["first_gaps"] else "")
            )
        total_gaps = sum(r["gaps"] for r in rows)
        total_dups = sum(r["duplicates"] for r in rows)
        if reports.invalid:
            print(
                f"{sum(reports.invalid.values())} invalid messages (dead letters for the stream): "
                + "; ".join(f"{n}× {reason}" for reason, n in reports.invalid.most_common())
            )
        print(f"{len(rows)} symbols, {total_gaps} gaps, {total_dups} duplicates: {'FAIL' if bad else 'OK'}")
    if not rows:
        print("no bars in the topic yet", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
