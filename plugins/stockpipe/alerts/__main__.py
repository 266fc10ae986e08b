"""Alert rules from the command line (as the rules role: it may change market.alert_rules only).

    python -m stockpipe.alerts add AAPL "rsi_14 crosses below 30" [--cooldown 15] [--webhook URL]
    python -m stockpipe.alerts add "*" "macd crosses above signal"
    python -m stockpipe.alerts list
    python -m stockpipe.alerts disable 3      (enable 3 turns it back on)
    python -m stockpipe.alerts delete 3

Conditions: rsi_14 crosses below|above L · macd crosses above|below signal · close crosses
above|below sma_5|sma_20|sma_50|ema_12|ema_26|bb_upper|bb_middle|bb_lower · close moves X% within N
minutes · volume >= Kx avg_20. A bad rule gets one sentence and is not stored.
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from stockpipe.alerts.rules import Rule, RuleError
from stockpipe.clients import pg_connect
from stockpipe.config import Settings, get_settings
from stockpipe.storage import alerts as store


def _line(rule: Rule) -> str:
    state = "enabled" if rule.enabled else "disabled"
    extra = f", cool-down {rule.cooldown_minutes} min" if rule.cooldown_minutes else ""
    extra += ", own webhook" if rule.webhook_url else ""
    return f"{rule.id:>5}  {rule.symbol:<6} {rule.description}  ({state}{extra})"


def run(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stockpipe.alerts", description="Indicator alert rules.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a rule")
    add.add_argument("symbol", help="ticker, or * for every streamed symbol")
    add.add_argument("condition", help='e.g. "rsi_14 crosses below 30"')
    add.add_argument("--cooldown", default=0, help="minutes (bar time) before the rule fires again for a symbol")
    add.add_argument("--webhook", default=None, help="this rule's webhook URL (default: the global setting)")
    commands.add_parser("list", help="list the rules")
    for name in ("disable", "enable", "delete"):
        commands.add_parser(name, help=f"{name} a rule").add_argument("id", type=int)
    args = parser.parse_args(argv)
    settings = settings or get_settings()
    try:
        conn = pg_connect(settings, "rules", autocommit=True)
    except psycopg.OperationalError as error:
        print(
            f"PostgreSQL at {settings.pg_host}:{settings.pg_port} refused the rules role {settings.pg_rules_user} "
            f"({str(error).strip().splitlines()[-1]}); start the stack with `make up`.",
            file=sys.stderr,
        )
        return 2
    with conn:
        if args.command == "add":
            try:
                rule = store.add_rule(conn, args.symbol, args.condition, args.cooldown, args.webhook)
            except RuleError as error:
                print(f"rule not stored: {error}", file=sys.stderr)
                return 2
            print(f"added {_line(rule).strip()}")
        elif args.command == "list":
            rules = store.list_rules(conn)
            for rule in rules:
                print(_line(rule))
            if not rules:
                print('no rules yet: add one with `python -m stockpipe.alerts add AAPL "rsi_14 crosses below 30"`')
        elif args.command in ("disable", "enable"):
            if not store.set_rule_enabled(conn, args.id, args.command == "enable"):
                print(f"there is no rule {args.id} (see `python -m stockpipe.alerts list`).", file=sys.stderr)
                return 1
            print(f"rule {args.id} {args.command}d")
        else:
            if not store.delete_rule(conn, args.id):
                print(f"there is no rule {args.id} (see `python -m stockpipe.alerts list`).", file=sys.stderr)
                return 1
            print(f"rule {args.id} deleted (its alerts stay in the history)")
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
