"""Indicator alerts for users: rules (``rules``), their evaluation on the stream's stored values
(``evaluate``, run by the sink through ``stockpipe.storage.alerts.evaluate_batch``), delivery to
Redis pub/sub and webhooks (``worker``), and the CLI (``python -m stockpipe.alerts``)."""
