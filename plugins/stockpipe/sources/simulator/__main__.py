"""``python -m stockpipe.sources.simulator``: serve the market simulator in the foreground."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from stockpipe.config import load_settings
from stockpipe.logs import setup_logging

from .app import PLANS, SimulatorOptions
from .server import serve


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(
        prog="python -m stockpipe.sources.simulator",
        description="Polygon-compatible market simulator (REST). Defaults come from STOCKPIPE_SIMULATOR_*.",
    )
    parser.add_argument("--host", default=settings.simulator_host, help="bind address (keep it loopback)")
    parser.add_argument("--port", type=int, default=settings.simulator_port)
    parser.add_argument("--seed", type=int, default=settings.simulator_seed, help="seed of the price paths")
    parser.add_argument(
        "--clock",
        choices=["demo", "nyse"],
        default=settings.simulator_clock,
        help="demo: always open; nyse: real NYSE sessions",
    )
    parser.add_argument(
        "--free-tier",
        action=argparse.BooleanOptionalAction,
        default=settings.simulator_free_tier,
        help="answer 429 beyond 5 calls per rolling minute per API key",
    )
    parser.add_argument(
        "--plan",
        choices=PLANS,
        default=settings.simulator_plan,
        help="basic: end-of-day data, 5 calls/min; starter: 15 min delayed; advanced: real time",
    )
    parser.add_argument(
        "--faults",
        type=json.loads,
        default=settings.simulator_faults or None,
        help='initial faults as JSON, e.g. \'{"status_429": 2, "retry_after": 3}\' (see faults.py)',
    )
    parser.add_argument(
        "--universe-size",
        type=int,
        default=settings.simulator_universe_size,
        help="symbols of /v3/reference/tickers and of the WebSocket's AM.*",
    )
    parser.add_argument("--log-level", default=settings.log_level)
    args = parser.parse_args(argv)

    setup_logging(args.log_level.upper(), settings.log_json, stream=sys.stderr)
    logging.getLogger("stockpipe.simulator").info(
        "market simulator (seed %d, clock %s, %s plan%s) on http://%s:%d",
        args.seed,
        args.clock,
        args.plan,
        ", free tier" if args.free_tier else "",
        args.host,
        args.port,
    )
    options = SimulatorOptions(
        seed=args.seed,
        clock=args.clock,
        free_tier=args.free_tier,
        plan=args.plan,
        faults=args.faults,
        admin_token=settings.simulator_admin_token.get_secret_value(),  # empty: /_admin stays closed
        universe_size=args.universe_size,
    )
    serve(options, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
