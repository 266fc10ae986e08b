"""PostgreSQL schema and sinks, Redis latest-state writer."""
