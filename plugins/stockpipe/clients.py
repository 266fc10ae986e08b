"""Clients of the services stockpipe talks to, built from the settings in one place.

**PostgreSQL.** Every connection of the package, the Spark jobs and the dashboard is opened here:
:func:`pg_connect` (one connection as a role: ``writer`` — the pipeline, ``reader`` — read-only
tools, ``admin`` — migrations and bootstrap), :func:`pg_connect_dsn` (the same for a DSN carried
into another process: Spark's Python workers) and :func:`pg_pool` (a ``psycopg_pool`` pool for a
process that lives long: the exporter, the dashboard).

**Kafka** (market-data and Airflow clients may move here too). Every Kafka
client of the package — the producer, the stream's dead-letter writer, the exporter, the health
checks, ``verify``, ``admin``, the dashboard and Airflow's ``kafka_default`` connection — gets its
configuration from :func:`kafka_config`; Spark's Kafka source gets the same settings, in the Java
client's terms, from :func:`spark_kafka_options`. So one set of ``STOCKPIPE_KAFKA_*`` settings moves
all of them from the local PLAINTEXT broker to, say, AWS MSK with SASL_SSL/SCRAM-SHA-512:

=================================  ===================================  =====================================
setting                            librdkafka (confluent_kafka)         Spark's Kafka source (Java client)
=================================  ===================================  =====================================
``STOCKPIPE_KAFKA_BOOTSTRAP``      ``bootstrap.servers``                ``kafka.bootstrap.servers``
``..._SECURITY_PROTOCOL``          ``security.protocol``                ``kafka.security.protocol``
``..._SASL_MECHANISM``             ``sasl.mechanism``                   ``kafka.sasl.mechanism``
``..._SASL_USERNAME/PASSWORD``     ``sasl.username``/``sasl.password``  ``kafka.sasl.jaas.config`` (Scram/Plain
                                                                        LoginModule)
``..._SSL_CA_FILE``                ``ssl.ca.location``                  ``kafka.ssl.truststore.type=PEM``,
                                                                        ``kafka.ssl.truststore.location``
=================================  ===================================  =====================================

The password only ever leaves a :class:`~pydantic.SecretStr` inside these dictionaries; they are
handed to the client libraries, never logged (use :func:`redacted` to show one).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from stockpipe.config import Settings

if TYPE_CHECKING:
    import httpx
    import psycopg
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient
    from psycopg_pool import ConnectionPool

#: Who a PostgreSQL connection is for: picks the login (:meth:`Settings.pg_dsn`).
PgRole = Literal["writer", "reader", "rules", "admin"]

#: ``psycopg.connect`` keywords of every connection (a caller's keywords win).
PG_DEFAULTS: dict[str, Any] = {"connect_timeout": 10}

#: Who a client is for: picks its ``client.id`` and role defaults (:data:`ROLE_DEFAULTS`).
KafkaRole = Literal["producer", "dlq", "admin", "exporter", "health", "verify", "dashboard"]

#: librdkafka settings per role, under the security settings and over librdkafka's defaults.
ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    # the market-data producer: no loss, no duplicates from retries, batched and compressed
    "producer": {"enable.idempotence": True, "acks": "all", "linger.ms": 20, "compression.type": "lz4"},
    # the stream's dead letters, sent and flushed inside a micro-batch
    "dlq": {"enable.idempotence": True, "acks": "all", "linger.ms": 5},
    # topic management (make up, tests)
    "admin": {"socket.timeout.ms": 5000},
    # one scrape has a few seconds; a down broker is reported by stockpipe_service_up, not by stderr
    "exporter": {"socket.timeout.ms": 3000, "socket.connection.setup.timeout.ms": 3000, "log_level": 3},
    # the stream_health DAG's checks
    "health": {"socket.timeout.ms": 5000},
    # python -m stockpipe.verify: reads a topic to its end, never commits
    "verify": {"enable.partition.eof": True},
    # Streamlit pages: a down broker is shown once by a banner, not every second on stderr
    "dashboard": {"socket.timeout.ms": 3000, "socket.connection.setup.timeout.ms": 3000, "log_level": 0},
}

#: What the consumers among them add (they only ever assign partitions: nothing is committed).
CONSUMER_DEFAULTS: dict[str, Any] = {"enable.auto.commit": False}

#: Keys of :func:`kafka_config` that carry a secret.
SECRET_KEYS = frozenset({"sasl.password"})

_JAAS_MODULES = {
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}


# --- PostgreSQL ----------------------------------------------------------------------------------
def pg_connect_dsn(dsn: str, **kwargs: Any) -> psycopg.Connection:
    """A new connection to ``dsn``; ``kwargs`` go to ``psycopg.connect`` (over :data:`PG_DEFAULTS`)."""
    import psycopg

    return psycopg.connect(dsn, **{**PG_DEFAULTS, **kwargs})


def pg_connect(
    settings: Settings, role: PgRole = "writer", database: str | None = None, **kwargs: Any
) -> psycopg.Connection:
    """A new connection as ``role`` to ``database`` (default ``STOCKPIPE_PG_DATABASE``).

    ``kwargs`` go to ``psycopg.connect``: ``autocommit=True``, another ``connect_timeout``, ...
    """
    return pg_connect_dsn(settings.pg_dsn(role, database), **kwargs)


def pg_pool(
    settings: Settings,
    role: PgRole,
    *,
    name: str,
    max_size: int = 2,
    timeout_s: float = 10.0,
    read_only: bool = False,
    **kwargs: Any,
) -> ConnectionPool:
    """An open pool of autocommit connections as ``role``, for a process that lives long.

    Connections are made on demand (none at start, at most ``max_size``), checked before each use
    (a server restart costs no failed query) and dropped after 10 idle minutes. The server is tried
    once first, so an unreachable one raises its own ``psycopg.OperationalError`` at once, not a
    ``PoolTimeout`` after ``timeout_s``. ``kwargs`` go to every ``psycopg.connect``.
    """
    from psycopg_pool import ConnectionPool

    dsn = settings.pg_dsn(role)
    options = {**PG_DEFAULTS, "autocommit": True, "application_name": f"stockpipe-{name}", **kwargs}
    pg_connect_dsn(dsn, **options).close()

    def configure(conn: psycopg.Connection) -> None:
        conn.read_only = read_only

    return ConnectionPool(
        dsn,
        kwargs=options,
        min_size=0,
        max_size=max_size,
        open=True,
        configure=configure,
        check=ConnectionPool.check_connection,
        name=f"stockpipe-{name}",
        timeout=timeout_s,
    )


# --- Kafka configuration -------------------------------------------------------------------------
def kafka_security(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and the security settings of every client, in librdkafka's terms."""
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap}
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return config
    config["security.protocol"] = protocol
    if protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol.endswith("SSL") and settings.kafka_ssl_ca_file is not None:
        config["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
    return config


def kafka_config(settings: Settings, role: KafkaRole, **overrides: Any) -> dict[str, Any]:
    """The librdkafka configuration of a ``role`` client: security, ``client.id``, role defaults.

    ``overrides`` (librdkafka keys: pass dotted ones as ``**{"message.timeout.ms": 5000}``) win.
    """
    if role not in ROLE_DEFAULTS:
        raise ValueError(f"unknown Kafka client role {role!r}; one of {', '.join(ROLE_DEFAULTS)}")
    return {"client.id": f"stockpipe-{role}", **ROLE_DEFAULTS[role], **kafka_security(settings), **overrides}


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with its secrets masked, for logs and error messages."""
    return {key: ("***" if key in SECRET_KEYS and value else value) for key, value in config.items()}


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spark_kafka_options(settings: Settings) -> dict[str, str]:
    """The ``kafka.*`` options of Spark's Kafka source (the Java client's terms for the same settings).

    SASL credentials go in ``kafka.sasl.jaas.config`` (Spark redacts it in plans and logs); a CA file
    becomes a PEM truststore (``ssl.truststore.type=PEM``: Kafka clients >= 2.7), so no JKS is
    needed. The file must be readable at that path wherever the source runs (driver and executors).
    """
    options = {"kafka.bootstrap.servers": settings.kafka_bootstrap}
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return options
    options["kafka.security.protocol"] = protocol
    if protocol.startswith("SASL_"):
        mechanism = settings.kafka_sasl_mechanism
        options["kafka.sasl.mechanism"] = mechanism
        options["kafka.sasl.jaas.config"] = (
            f"{_JAAS_MODULES[mechanism]} required"
            f" username={_jaas_quote(settings.kafka_sasl_username)}"
            f" password={_jaas_quote(settings.kafka_sasl_password.get_secret_value())};"
        )
    if protocol.endswith("SSL") and settings.kafka_ssl_ca_file is not None:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = str(settings.kafka_ssl_ca_file)
    return options


# --- Kafka clients -------------------------------------------------------------------------------
def kafka_producer(settings: Settings, role: KafkaRole = "producer", **overrides: Any) -> Producer:
    from confluent_kafka import Producer

    return Producer(kafka_config(settings, role, **overrides))


def kafka_consumer(settings: Settings, role: KafkaRole, **overrides: Any) -> Consumer:
    """A consumer that assigns partitions itself and commits nothing (``group.id``: a per-role default)."""
    from confluent_kafka import Consumer

    overrides = {"group.id": f"stockpipe-{role}", **CONSUMER_DEFAULTS, **overrides}
    return Consumer(kafka_config(settings, role, **overrides))


def kafka_admin(settings: Settings, role: KafkaRole = "admin", **overrides: Any) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    return AdminClient(kafka_config(settings, role, **overrides))


# --- Kafka offsets -------------------------------------------------------------------------------
def partition_offsets(
    admin: AdminClient,
    partitions: Iterable[tuple[str, int]],
    which: Literal["latest", "earliest"] = "latest",
    *,
    timeout_s: float = 10.0,
    partial: bool = False,
) -> dict[tuple[str, int], int]:
    """End (``latest``: the high watermark) or start offset of each (topic, partition).

    ``partial``: a partition that does not answer (its leader moving) is left out instead of failing
    the call, unless none answers.
    """
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    spec = OffsetSpec.latest() if which == "latest" else OffsetSpec.earliest()
    wanted = {TopicPartition(topic, p): spec for topic, p in partitions}
    if not wanted:
        return {}
    offsets: dict[tuple[str, int], int] = {}
    failures: list[KafkaException] = []
    for tp, future in admin.list_offsets(wanted, request_timeout=timeout_s).items():
        try:
            offsets[(tp.topic, tp.partition)] = future.result().offset
        except KafkaException as error:
            failures.append(error)
    if failures and (not partial or not offsets):
        raise failures[0]
    return offsets


def end_offsets(
    settings: Settings,
    topic: str,
    *,
    admin: AdminClient | None = None,
    role: KafkaRole = "admin",
    timeout_s: float = 10.0,
) -> dict[int, int] | None:
    """High watermark per partition of ``topic``; None when the topic does not exist.

    Raises ``KafkaException`` when the broker does not answer. ``admin``: a client to reuse (the
    exporter keeps one); by default a ``role`` client is made for the call.
    """
    admin = admin if admin is not None else kafka_admin(settings, role)
    metadata = admin.list_topics(topic, timeout=timeout_s)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        return None
    offsets = partition_offsets(admin, [(topic, p) for p in found.partitions], timeout_s=timeout_s)
    return {p: offset for (_, p), offset in offsets.items()}


# --- Airflow REST API ----------------------------------------------------------------------------
AirflowLogin = Literal["viewer", "admin"]


class AirflowLoginRefused(RuntimeError):
    """The api-server answered the token request with an error (wrong user or password)."""


def airflow_base_url(settings: Settings) -> str:
    """The api-server's URL: STOCKPIPE_AIRFLOW_API_URL, else the local one."""
    return (settings.airflow_api_url or f"http://127.0.0.1:{settings.airflow_port}").rstrip("/")


def airflow_credentials(settings: Settings, login: AirflowLogin) -> tuple[str, str]:
    """``viewer``: the read-only STOCKPIPE_AIRFLOW_API_USER (dashboard, exporter); ``admin``: the
    generated admin login of Airflow's passwords file (marking a task failed needs it)."""
    import json
    import os
    from pathlib import Path

    from stockpipe.scopes import airflow_api_password

    if login == "viewer":
        return settings.airflow_api_user, airflow_api_password(settings)
    from stockpipe.airflow.bootstrap import ADMIN_USER

    path = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or str(
        settings.local_dir / "airflow" / "passwords.json"
    )
    return ADMIN_USER, json.loads(Path(path).read_text())[ADMIN_USER]


@contextmanager
def airflow_client(
    settings: Settings, login: AirflowLogin = "viewer", *, base_url: str | None = None, timeout_s: float = 15.0
) -> Iterator[httpx.Client]:
    """An httpx client of Airflow's REST API, logged in (JWT from ``/auth/token``) as ``login``.
    Raises :class:`AirflowLoginRefused` when the login is refused, httpx errors when unreachable."""
    import httpx

    user, password = airflow_credentials(settings, login)
    with httpx.Client(base_url=(base_url or airflow_base_url(settings)).rstrip("/"), timeout=timeout_s) as client:
        token = client.post("/auth/token", json={"username": user, "password": password})
        if token.status_code >= 400:
            raise AirflowLoginRefused(f"login as {user} refused: HTTP {token.status_code}")
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


# --- market data ---------------------------------------------------------------------------------
# The market-data API (Massive, formerly Polygon.io, or the simulator) as every caller gets it: the
# official client, the shared rate limit (docs/architecture.md, "Rate limit") and ONE retry policy
# ("Retries"). The producer, Airflow's ingest and the backfill all build theirs here.

if TYPE_CHECKING:
    from tenacity import RetryCallState

T = TypeVar("T")
_market_log = logging.getLogger("stockpipe.clients.market")

#: Who calls: live ingest, or the backfill, which leaves live ingest a share of every window.
MarketPriority = Literal["live", "backfill"]


def backfill_reserve(calls_per_window: int) -> int:
    """Slots of each rate-limit window the backfill leaves to live ingest (a fifth, at least one,
    none when the budget is a single call: the backfill would never run)."""
    return 0 if calls_per_window < 2 else max(1, calls_per_window // 5)


class MarketSource:
    """:class:`~stockpipe.sources.polygon.PolygonSource` behind the shared rate limiter and the one
    retry policy: tenacity, on :class:`~stockpipe.sources.polygon.RetryableSourceError` (timeouts,
    connection errors, 5xx, 429, unparseable bodies), waits of 1, 2, 4 s (× ``STOCKPIPE_RETRY_BASE_S``)
    where a 429's Retry-After wins when longer, ``STOCKPIPE_RETRY_ATTEMPTS`` retries, then the
    error is raised. Every HTTP request (pages and retries included) first takes a rate-limit slot.
    """

    def __init__(self, settings: Settings, api: Any, limiter: Any, *, sleep: Callable[[float], None]) -> None:
        self.settings = settings
        self.api = api  # the PolygonSource: call it through call() to be retried
        self.limiter = limiter
        self.sleep = sleep
        self._prepaid = threading.local()
        api.before_call = self._before_call

    # -- rate limit ---------------------------------------------------------------------------
    def _before_call(self) -> None:
        from stockpipe.producer import metrics

        if getattr(self._prepaid, "slot", False):
            self._prepaid.slot = False
        else:
            self.limiter.acquire()
        metrics.API_CALLS.inc()

    def take_slot(self, max_wait_s: float | None = None) -> None:
        """Wait for the rate-limit slot of this thread's next HTTP request now, so that what depends
        on the moment of the call (the end of a window of closed bars) is decided after the grant.
        With ``max_wait_s``, :class:`~stockpipe.producer.limiter.NoSlot` when it would take longer."""
        if not getattr(self._prepaid, "slot", False):
            if max_wait_s is None:
                self.limiter.acquire()
            else:
                self.limiter.acquire(max_wait_s=max_wait_s)
            self._prepaid.slot = True

    # -- retries ------------------------------------------------------------------------------
    def retry_wait(self, state: RetryCallState) -> float:
        """1 s, 2 s, 4 s (× retry_base_s); a 429's Retry-After (× retry_base_s) wins when longer."""
        from stockpipe.sources.polygon import RateLimited

        base = self.settings.retry_base_s
        delay = base * (2 ** (state.attempt_number - 1))
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimited) and error.retry_after:
            delay = max(delay, error.retry_after * base)
        return delay

    def call(self, fn: Callable[[], T], what: str) -> T:
        """``fn()`` under the retry policy; the last error is raised when the retries are spent."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        from stockpipe.producer import metrics
        from stockpipe.sources.polygon import RetryableSourceError

        def before_sleep(state: RetryCallState) -> None:
            metrics.API_RETRIES.inc()
            _market_log.warning(
                "%s failed (%s); retry %d in %.1fs",
                what,
                state.outcome.exception() if state.outcome else "?",
                state.attempt_number,
                state.next_action.sleep if state.next_action else 0,
            )

        retrying = Retrying(
            retry=retry_if_exception_type(RetryableSourceError),
            stop=stop_after_attempt(self.settings.retry_attempts + 1),
            wait=self.retry_wait,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)

    # -- the calls ----------------------------------------------------------------------------
    def minute_bars(self, symbol: str, start: datetime, end: datetime, **kwargs: Any) -> list:
        """Retried :meth:`PolygonSource.minute_bars` (bars starting in [start, end])."""
        return self.call(lambda: self.api.minute_bars(symbol, start, end, **kwargs), f"bars of {symbol}")

    def ticker_details(self, symbol: str) -> dict | None:
        """Retried :meth:`PolygonSource.ticker_details`."""
        return self.call(lambda: self.api.ticker_details(symbol), f"ticker details of {symbol}")


def market_source(
    settings: Settings,
    *,
    priority: MarketPriority = "live",
    sleep: Callable[[float], None] = time.sleep,
) -> MarketSource:
    """The market-data source of ``settings`` (Massive with a key, else the simulator), rate-limited
    with every other process through Redis and retried by the one policy. ``priority="backfill"``
    leaves :func:`backfill_reserve` slots of each window to live ingest. ``sleep`` is every wait's
    (rate limit and retries): pass one that raises to stop a process promptly."""
    from stockpipe.producer import metrics
    from stockpipe.producer.limiter import SharedRateLimiter
    from stockpipe.sources.polygon import PolygonSource

    limiter = SharedRateLimiter(
        settings.redis_dsn,
        settings.rate_limit_per_minute,
        settings.market_data_key,
        window_s=settings.rate_limit_window_s,
        guard_s=settings.rate_limit_guard_s,
        reserve=backfill_reserve(settings.rate_limit_per_minute) if priority == "backfill" else 0,
        on_wait=metrics.RATE_LIMIT_WAIT.inc,
        sleep=sleep,
    )
    api = PolygonSource(settings.market_data_key, base_url=settings.market_data_url, timeout=settings.http_timeout_s)
    return MarketSource(settings, api, limiter, sleep=sleep)


#: Massive's stocks WebSocket clusters (``massive.websocket.models.Feed``), by STOCKPIPE_WEBSOCKET_CLUSTER.
WEBSOCKET_CLUSTERS = {"real-time": "socket.massive.com", "delayed": "delayed.massive.com"}


def market_websocket(settings: Settings, subscriptions: list[str], **kwargs: Any) -> Any:
    """The official ``massive.WebSocketClient`` of ``settings``, on the stocks cluster of
    ``STOCKPIPE_WEBSOCKET_CLUSTER``: Massive's (``wss://socket.massive.com/stocks`` or
    ``wss://delayed.massive.com/stocks``) with a key, else the simulator's (``ws://`` on loopback,
    the cluster a path prefix). Raw frames (the caller parses and dead-letters them) and no
    reconnects of its own: the caller reconnects, so that it knows when to refill the gap.
    ``kwargs`` go to the client (e.g. ``max_reconnects``)."""
    from massive import WebSocketClient

    if settings.uses_simulator:
        delayed = "/delayed" if settings.websocket_cluster == "delayed" else ""
        where, secure = f"{settings.simulator_host}:{settings.simulator_port}{delayed}", False
    else:
        where, secure = WEBSOCKET_CLUSTERS[settings.websocket_cluster], True
    options: dict[str, Any] = {"raw": True, "max_reconnects": 0, **kwargs}
    return WebSocketClient(
        api_key=settings.market_data_key,
        feed=where,
        market="stocks",
        subscriptions=subscriptions,
        secure=secure,
        **options,
    )
