"""Operator commands of the local stack.

``python -m stockpipe.admin topics [--wait SECONDS]`` creates the bars topic and its dead-letter
topic when absent (idempotent).
"""

from __future__ import annotations

import argparse
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stockpipe.config import Settings, get_settings


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 5000})


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


def main() -> None:
    parser = argparse.ArgumentParser(description="stockpipe operator commands")
    sub = parser.add_subparsers(dest="command", required=True)
    topics = sub.add_parser("topics", help="create the Kafka topics when absent")
    topics.add_argument("--wait", type=float, default=0, help="seconds to wait for the broker")
    args = parser.parse_args()
    settings = get_settings()
    if args.command == "topics":
        created = ensure_topics(settings, wait_s=args.wait)
        print("topics: " + (f"created {', '.join(created)}" if created else "present"))


if __name__ == "__main__":
    main()
