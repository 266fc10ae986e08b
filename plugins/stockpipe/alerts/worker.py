"""The alerts delivery worker: ``python -m stockpipe.alerts.worker`` (supervisord program ``alerts``).

The stream only inserts alerts (``delivery = 'pending'``, in the transaction of their bars, with a
``NOTIFY stockpipe_alerts``); this worker delivers them, so a slow or dead webhook never holds the
stream up:

1. take the pending alerts (``sending``; ``FOR UPDATE SKIP LOCKED``), oldest first;
2. publish each on Redis pub/sub ``stockpipe:alerts`` (JSON, with the alert's id: a consumer can
   drop a repeat) and stamp ``published_at``;
3. POST ``{"text": ...}`` (Slack-compatible) to the rule's webhook or STOCKPIPE_USER_ALERTS_WEBHOOK_URL,
   retried 1, 2, 4 s apart, in a small thread pool (one dead URL delays only its own alerts), and
   record ``delivered`` / ``failed``, the attempts and the last error.

An alert a worker took but did not finish (killed) is pending again at the next start: delivery is
at least once, and each message carries the alert id. A retracted alert that had been delivered is
delivered again with ``"status": "retracted"``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import redis
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from stockpipe.clients import pg_connect
from stockpipe.config import Settings, get_settings
from stockpipe.logs import setup_logging
from stockpipe.storage import alerts as store

log = logging.getLogger(__name__)


class WebhookRefused(Exception):
    """The webhook answered with a non-2xx status."""


def message(alert: dict[str, Any]) -> dict[str, Any]:
    """What goes on the pub/sub channel."""
    return {
        "id": alert["id"],
        "rule_id": alert["rule_id"],
        "symbol": alert["symbol"],
        "ts": alert["ts"].isoformat().replace("+00:00", "Z"),
        "status": alert["status"],
        "condition": alert["description"],
        "close": alert["close"],
        "value": alert["value"],
        "fired_at": alert["fired_at"].isoformat().replace("+00:00", "Z"),
    }


def text(alert: dict[str, Any]) -> str:
    """The webhook's one line: ``AAPL 2026-11-24 14:31 UTC: rsi_14 crosses below 30 (29.4), close 187.25``."""
    when = alert["ts"].strftime("%Y-%m-%d %H:%M UTC")
    value = "" if alert["value"] is None else f" ({alert['value']:.4g})"
    close = "" if alert["close"] is None else f", close {alert['close']:g}"
    prefix = "Retracted (a corrected bar undid it): " if alert["status"] == "retracted" else ""
    return f"{prefix}{alert['symbol']} {when}: {alert['description']}{value}{close}"


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn = pg_connect(settings, "writer", autocommit=True, application_name="stockpipe-alerts")
        self.redis = settings.redis_client()
        self.http = httpx.Client(timeout=settings.user_alerts_webhook_timeout_s)
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook")
        self.stopping = threading.Event()
        self._db_lock = threading.Lock()  # one connection, shared with the webhook threads

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.http.close()
        self.redis.close()
        self.conn.close()

    def webhook_url(self, alert: dict[str, Any]) -> str | None:
        if alert.get("webhook_url"):
            return alert["webhook_url"]
        url = self.settings.user_alerts_webhook_url
        return url.get_secret_value() if url is not None else None

    def post(self, alert: dict[str, Any]) -> None:
        """POST the alert to its webhook with retries; record the outcome (runs in the pool)."""
        url = self.webhook_url(alert)
        attempts, error, status = 0, None, "no_url"
        if url:
            retrying = Retrying(
                stop=stop_after_attempt(self.settings.user_alerts_webhook_retries + 1),
                wait=wait_exponential(multiplier=1, min=1, max=4),
                retry=retry_if_exception_type((httpx.HTTPError, WebhookRefused)),
                sleep=self.stopping.wait,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        attempts += 1
                        response = self.http.post(url, json={"text": text(alert)})
                        if not response.is_success:
                            raise WebhookRefused(f"HTTP {response.status_code}")
                status = "sent"
            except RetryError as failure:
                if self.stopping.is_set():
                    return  # stopped mid-retry: still "sending", pending again at the next start
                cause = failure.last_attempt.exception()
                # the URL may hold a token (Slack's do): name the error's type and status only
                error = str(cause) if isinstance(cause, WebhookRefused) else type(cause).__name__
                status = "failed"
                log.warning("alert %s: webhook failed after %s attempt(s): %s", alert["id"], attempts, error)
        with self._db_lock:
            store.finish_delivery(self.conn, alert["id"], status, attempts, error)

    def deliver(self, alerts: list[dict[str, Any]]) -> None:
        channel = self.settings.redis_alerts_channel
        pipe = self.redis.pipeline(transaction=False)
        for alert in alerts:
            pipe.publish(channel, json.dumps(message(alert)))
        pipe.execute()
        with self._db_lock:
            store.mark_published(self.conn, [a["id"] for a in alerts])
        for alert in alerts:
            self.pool.submit(self.post, alert)
        log.info("published %s alert(s) on %s", len(alerts), channel)

    def run_once(self) -> int:
        with self._db_lock:
            alerts = store.claim_pending(self.conn)
        if alerts:
            try:
                self.deliver(alerts)
            except redis.exceptions.RedisError:
                with self._db_lock:
                    store.release_unfinished(self.conn, [a["id"] for a in alerts])
                raise
        return len(alerts)

    def run(self) -> None:
        with self._db_lock:
            released = store.release_unfinished(self.conn)
        if released:
            log.info("%s alert(s) a previous worker did not finish are pending again", released)
        listener = pg_connect(self.settings, "writer", autocommit=True, application_name="stockpipe-alerts-listen")
        listener.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
        log.info("delivering alerts to Redis %s and webhooks", self.settings.redis_alerts_channel)
        try:
            while not self.stopping.is_set():
                try:
                    while self.run_once():
                        pass
                except (redis.exceptions.RedisError, psycopg.OperationalError) as error:
                    log.warning("delivery paused (%s); retrying", type(error).__name__)
                    self.stopping.wait(self.settings.user_alerts_poll_s)
                    if self.conn.closed:
                        self.conn = pg_connect(self.settings, "writer", autocommit=True)
                # Wait for a NOTIFY from the sink's commit, at most the poll interval.
                for _ in listener.notifies(timeout=self.settings.user_alerts_poll_s, stop_after=1):
                    pass
        finally:
            listener.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stockpipe.alerts.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="deliver what is pending, then exit")
    parser.add_argument("--check", action="store_true", help="exit 0 when PostgreSQL and Redis answer (healthcheck)")
    args = parser.parse_args(argv)
    setup_logging("INFO", stream=sys.stderr)
    settings = get_settings()
    try:
        if args.check:
            with pg_connect(settings, "writer", connect_timeout=5) as conn:
                conn.execute("SELECT count(*) FROM market.alerts WHERE delivery = 'pending'")
            settings.redis_client(socket_timeout=5).ping()
            return
        worker = Worker(settings)
    except psycopg.OperationalError as error:
        raise SystemExit(
            f"PostgreSQL at {settings.pg_host}:{settings.pg_port} (database {settings.pg_database}) is unreachable "
            f"({str(error).strip().splitlines()[0]}); start it with `make up`."
        ) from None
    except redis.exceptions.RedisError as error:
        where = settings.redis_url.rsplit("@", 1)[-1]
        raise SystemExit(f"Redis at {where} is unreachable ({error}); start it with `make up`.") from None
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    try:
        if args.once:
            while worker.run_once():
                pass
        else:
            worker.run()
    except KeyboardInterrupt:
        worker.stopping.set()
    finally:
        worker.close()


if __name__ == "__main__":
    main()
