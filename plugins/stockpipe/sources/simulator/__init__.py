"""A Polygon-compatible market simulator: Polygon's REST protocol over a deterministic market.

With no Massive (formerly Polygon.io) API key the pipeline talks to this instead of
api.massive.com; the official ``massive.RESTClient(api_key, base=url)`` works against it unchanged,
and so does ``massive.WebSocketClient(api_key, feed="127.0.0.1:8090", market="stocks", secure=False)``
(Massive's WebSocket: ``/stocks`` real time, ``/delayed/stocks`` 15 minutes delayed; see :mod:`.stream`).

Run it::

    python -m stockpipe.sources.simulator [--host 127.0.0.1] [--port 8090] [--seed 42]
        [--clock demo|nyse] [--free-tier] [--faults '{"status_429": 2}']

(defaults from Settings: ``STOCKPIPE_SIMULATOR_HOST/PORT/SEED/CLOCK/FREE_TIER/FAULTS``).

In tests, run it in a thread on a free port::

    from stockpipe.sources.simulator import start_in_thread

    with start_in_thread(seed=7, clock="nyse", now=lambda: 1795804800.0) as sim:
        client = massive.RESTClient("any-key", base=sim.url)
        sim.state.apply_faults(FaultRequest(status_429=1))   # or POST {sim.url}/_admin/faults
        sim.state.log.stats()                                # or GET  {sim.url}/_admin/stats
                                                             #    (headers=sim.admin_headers)

Modules: :mod:`.model` (pure price model), :mod:`.clock` (demo / NYSE sessions),
:mod:`.market` (closed bars, late bars, corrections, aggregation), :mod:`.faults` (fault
injection — its docstring lists every fault), :mod:`.app` (the HTTP API and ``/_admin``),
:mod:`.stream` (the WebSocket API: AM events at each minute close),
:mod:`.server` (foreground and background-thread runners).
"""

from .app import SimulatorOptions, SimulatorState, create_app
from .faults import FaultRequest
from .model import is_known_symbol
from .server import RunningSimulator, serve, start_in_thread

__all__ = [
    "FaultRequest",
    "RunningSimulator",
    "SimulatorOptions",
    "SimulatorState",
    "create_app",
    "is_known_symbol",
    "serve",
    "start_in_thread",
]
