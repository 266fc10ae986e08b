"""stream_health's restart of a stalled stream goes through Airflow's REST API: log in, find the
running market_stream runs, mark their stream task failed (a fake api-server records the calls)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from stockpipe.airflow.restart import restart_stream
from stockpipe.config import load_settings


@pytest.fixture
def fake_api():
    calls: list[tuple[str, str, dict | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict | None:
            length = int(self.headers.get("Content-Length", 0))
            return json.loads(self.rfile.read(length)) if length else None

        def do_POST(self):  # noqa: N802
            body = self._body()
            calls.append(("POST", self.path, body))
            if body == {"username": "admin", "password": "pw-1"}:
                self._reply(201, {"access_token": "tok"})
            else:
                self._reply(401, {"detail": "bad login"})

        def do_GET(self):  # noqa: N802
            calls.append(("GET", self.path, None))
            if self.headers.get("Authorization") != "Bearer tok":
                return self._reply(401, {})
            self._reply(200, {"dag_runs": [{"dag_run_id": "scheduled__1"}], "total_entries": 1})

        def do_PATCH(self):  # noqa: N802
            calls.append(("PATCH", self.path, self._body()))
            self._reply(200, {"task_instances": []})

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", calls
    server.shutdown()


def test_restart_marks_the_running_stream_task_failed(fake_api, tmp_path, monkeypatch: pytest.MonkeyPatch):
    url, calls = fake_api
    passwords = tmp_path / "passwords.json"
    passwords.write_text('{"admin": "pw-1"}')
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))

    assert restart_stream(load_settings(), "stream stalled", base_url=url) == ["scheduled__1"]
    assert [(method, path.split("?")[0]) for method, path, _ in calls] == [
        ("POST", "/auth/token"),
        ("GET", "/api/v2/dags/market_stream/dagRuns"),
        ("PATCH", "/api/v2/dags/market_stream/dagRuns/scheduled__1/taskInstances/stream_indicators"),
    ]
    assert "state=running" in calls[1][1]
    assert calls[2][2]["new_state"] == "failed" and "stream stalled" in calls[2][2]["note"]
