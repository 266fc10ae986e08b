"""Running the simulator: in the foreground (``python -m stockpipe.sources.simulator``) or in a
background thread on an ephemeral port (tests)."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from .app import ADMIN_TOKEN_HEADER, Plan, SimulatorOptions, SimulatorState, create_app
from .clock import ClockMode

STARTUP_TIMEOUT_S = 10.0


def _uvicorn_config(app, host: str, port: int, log_level: str) -> uvicorn.Config:
    # access_log=False: uvicorn's access log prints query strings, and clients may put apiKey= there.
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_level=log_level, lifespan="off")


def serve(options: SimulatorOptions, host: str = "127.0.0.1", port: int = 8090, log_level: str = "info") -> None:
    """Serve until interrupted (SIGINT/SIGTERM)."""
    uvicorn.Server(_uvicorn_config(create_app(options), host, port, log_level.lower())).run()


@dataclass
class RunningSimulator:
    """A simulator serving in a background thread. Use as a context manager, or call :meth:`stop`."""

    url: str
    state: SimulatorState  # the live world: state.faults, state.market, state.log, state.set_clock(...)
    admin_token: str  # X-Admin-Token of its /_admin endpoints (admin_headers)
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def admin_headers(self) -> dict[str, str]:
        return {ADMIN_TOKEN_HEADER: self.admin_token}

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_in_thread(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    seed: int = 42,
    clock: ClockMode = "demo",
    free_tier: bool = False,
    plan: Plan = "advanced",
    now: Callable[[], float] | None = None,
    faults: dict[str, Any] | None = None,
    log_level: str = "warning",
    admin_token: str | None = None,
    universe_size: int | None = None,
) -> RunningSimulator:
    """Start a simulator in a daemon thread and return once it accepts connections.

    ``port=0`` picks a free port; the URL to use is ``.url``. ``now`` (unix seconds) freezes or
    drives the market clock. ``admin_token`` (default: a fresh random one) guards ``/_admin``.
    """
    admin_token = secrets.token_urlsafe(16) if admin_token is None else admin_token
    options = SimulatorOptions(
        seed=seed, clock=clock, free_tier=free_tier, plan=plan, faults=faults, admin_token=admin_token
    )
    if now is not None:
        options.now = now
    if universe_size is not None:
        options.universe_size = universe_size
    state = SimulatorState(options)
    server = uvicorn.Server(_uvicorn_config(create_app(state=state), host, port, log_level))

    # Bind here, not in uvicorn, so the chosen port is known before the thread starts.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    bound_port = listener.getsockname()[1]

    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name=f"simulator-{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            listener.close()
            raise RuntimeError(f"the simulator did not start on {host}:{bound_port}")
        time.sleep(0.01)
    return RunningSimulator(f"http://{host}:{bound_port}", state, admin_token, server, thread)
