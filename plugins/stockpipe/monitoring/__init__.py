"""Health checks of the running pipeline (stream progress, lag, freshness, dead letters)."""
