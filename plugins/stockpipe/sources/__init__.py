"""Where market data comes from.

* :mod:`stockpipe.sources.polygon` — :class:`~stockpipe.sources.polygon.PolygonSource`, the
  official ``massive`` client (Massive, formerly Polygon.io) with retries left to the caller,
  timeouts, clear exceptions, and the :class:`~stockpipe.sources.polygon.Bar` -> Kafka message mapping.
* :mod:`stockpipe.sources.simulator` — a Polygon-compatible HTTP server over a deterministic
  simulated market, used when no ``MASSIVE_API_KEY``/``POLYGON_API_KEY`` is set, and by the tests.
"""
