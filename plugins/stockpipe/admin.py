"""Operator commands of the local stack.

``python -m stockpipe.admin topics [--wait SECONDS]`` creates the bars topic and its dead-letter
topic when absent (idempotent).

``python -m stockpipe.admin scram-user [--wait SECONDS]`` sets the SCRAM credentials of
``STOCKPIPE_KAFKA_SASL_USERNAME`` to ``STOCKPIPE_KAFKA_SASL_PASSWORD`` (idempotent): the local
broker's SASL_SSL listener (``STOCKPIPE_KAFKA_SCRAM_PORT``) authenticates against them. It runs on
the local stack's PLAINTEXT listener at every ``make up``: ``kafka-storage format --add-scram``
only seeds a new cluster. (A managed cluster such as AWS MSK keeps its own users: don't run it there.)
"""

from __future__ import annotations

import argparse
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stockpipe.clients import kafka_admin
from stockpipe.config import Settings, get_settings


def admin_client(settings: Settings) -> AdminClient:
    return kafka_admin(settings, "admin")


def wait_for_kafka(settings: Settings, timeout_s: float) -> AdminClient:
    client = admin_client(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.list_topics(timeout=5)
            return client
        except KafkaException as error:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"Kafka at {settings.kafka_bootstrap} is unreachable ({error}); start it with `make up`."
                ) from None
            time.sleep(1)


def ensure_topics(
    settings: Settings, topics: dict[str, int] | None = None, wait_s: float = 0, retention_ms: int | None = None
) -> list[str]:
    """Create missing topics (name → partitions); return the names created."""
    topics = topics or {settings.kafka_topic: settings.kafka_partitions, settings.kafka_dlq_topic: 1}
    client = wait_for_kafka(settings, wait_s)
    existing = set(client.list_topics(timeout=10).topics)
    config = {"retention.ms": str(retention_ms)} if retention_ms else {}
    wanted = [
        NewTopic(name, num_partitions=parts, replication_factor=1, config=config)
        for name, parts in topics.items()
        if name not in existing
    ]
    created = []
    for name, future in (client.create_topics(wanted) if wanted else {}).items():
        try:
            future.result(timeout=30)
            created.append(name)
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise
    return created


def ensure_scram_user(
    settings: Settings, username: str, password: str, mechanism: str = "SCRAM-SHA-512", wait_s: float = 0
) -> None:
    """Create or update ``username``'s SCRAM credentials (same password: same effect, new salt)."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    if not username or not password:
        raise SystemExit(
            "A SCRAM user needs STOCKPIPE_KAFKA_SASL_USERNAME and STOCKPIPE_KAFKA_SASL_PASSWORD "
            "(the local stack generates them in .local/secrets.env)."
        )
    kind = {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256, "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}[mechanism]
    client = wait_for_kafka(settings, wait_s)
    upsert = UserScramCredentialUpsertion(username, ScramCredentialInfo(kind, 8192), password.encode())
    for future in client.alter_user_scram_credentials([upsert], request_timeout=30).values():
        future.result(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description="stockpipe operator commands")
    sub = parser.add_subparsers(dest="command", required=True)
    topics = sub.add_parser("topics", help="create the Kafka topics when absent")
    topics.add_argument("--wait", type=float, default=0, help="seconds to wait for the broker")
    scram = sub.add_parser("scram-user", help="set the SCRAM credentials of STOCKPIPE_KAFKA_SASL_USERNAME")
    scram.add_argument("--wait", type=float, default=0, help="seconds to wait for the broker")
    args = parser.parse_args()
    settings = get_settings()
    if args.command == "topics":
        created = ensure_topics(settings, wait_s=args.wait)
        print("topics: " + (f"created {', '.join(created)}" if created else "present"))
    elif args.command == "scram-user":
        # the local listener's mechanism (infra/kafka/server.properties.template)
        username, password = settings.kafka_sasl_username, settings.kafka_sasl_password.get_secret_value()
        ensure_scram_user(settings, username, password, "SCRAM-SHA-512", wait_s=args.wait)
        print(f"SCRAM user {username}: set (SCRAM-SHA-512)")


if __name__ == "__main__":
    main()
