"""Market-data producer: Polygon (or the simulator) → validated minute bars → Kafka."""
