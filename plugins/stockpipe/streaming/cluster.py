"""A local Spark standalone cluster (``STOCKPIPE_SPARK_CLUSTER=standalone``): one master and one
worker from the installed pyspark (no separate Spark download), bound to 127.0.0.1 only.

    python -m stockpipe.streaming.cluster master     # exec the master (supervisord program spark-master)
    python -m stockpipe.streaming.cluster worker     # exec the worker (supervisord program spark-worker)
    python -m stockpipe.streaming.cluster wait       # until the master has an ALIVE worker (infra/stack.sh)

``--host NAME`` (and for the worker ``--master spark://NAME:PORT``) replace 127.0.0.1 where the daemons
must be reachable from other hosts: docker-compose.yaml's spark-master and spark-worker containers.

``infra/spark/run.sh`` is the supervisord command; ``infra/stack.sh up spark`` starts both before
Airflow. The jobs find the cluster through ``STOCKPIPE_SPARK_MASTER``, which defaults to
``spark://127.0.0.1:STOCKPIPE_SPARK_MASTER_PORT`` in standalone mode; on a ``spark://`` master each
job takes at most ``STOCKPIPE_SPARK_CORES_MAX`` cores and ``STOCKPIPE_SPARK_EXECUTOR_MEMORY``
(``stockpipe.streaming.spark``), so the streaming job and a backfill run side by side.

Loopback only: ``SPARK_LOCAL_IP`` makes the RPC endpoints, the block managers *and the web UIs*
bind 127.0.0.1 (Spark's UIs bind 0.0.0.0 without it); ``--host`` is what master and worker
advertise. ``spark.port.maxRetries=0`` for the daemons: a taken port is an error naming it, not a
silent move to the next port (which would be the neighbour's). The executors the worker launches
inherit its environment (``SPARK_LOCAL_IP``) and run the driver's Python (the project venv, where the
``stockpipe`` package is installed), so no code is shipped to them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from stockpipe.config import Settings

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
#: JVM options of the master and worker daemons (not of the executors).
DAEMON_JAVA_OPTIONS = (
    "-Dspark.port.maxRetries=0 -XX:G1PeriodicGCInterval=60000 -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30"
)
#: The master's REST submission server (port 6066) is not used: jobs connect as clients.
MASTER_OPTIONS = "-Dspark.master.rest.enabled=false"
#: The worker deletes the folders (jars, executor logs) of applications that ended a day ago.
WORKER_OPTIONS = (
    "-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.interval=3600 -Dspark.worker.cleanup.appDataTtl=86400"
)


def spark_home() -> Path:
    """The installed pyspark package: it ships bin/spark-class and the jars of a full Spark."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SystemExit("pyspark is not installed in this interpreter (.venv: `make install`)")
    return Path(spec.origin).parent


def daemon_env(work_dir: Path, base: Mapping[str, str] | None = None, host: str = HOST) -> dict[str, str]:
    """Environment of the master and worker JVMs (and, through the worker, of the executors)."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": host,
            "SPARK_MASTER_HOST": host,
            "SPARK_PUBLIC_DNS": host,  # the host the web UIs link to
            "SPARK_LOCAL_DIRS": str(work_dir / "tmp"),
            "SPARK_NO_DAEMONIZE": "1",
            "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
        }
    )
    env.setdefault("SPARK_DAEMON_MEMORY", "256m")
    env["SPARK_DAEMON_JAVA_OPTS"] = f"{env.get('SPARK_DAEMON_JAVA_OPTS', '')} {DAEMON_JAVA_OPTIONS}".strip()
    env["SPARK_MASTER_OPTS"] = f"{env.get('SPARK_MASTER_OPTS', '')} {MASTER_OPTIONS}".strip()
    env["SPARK_WORKER_OPTS"] = f"{env.get('SPARK_WORKER_OPTS', '')} {WORKER_OPTIONS}".strip()
    return env


def master_command(settings: Settings, host: str = HOST) -> list[str]:
    return [
        str(spark_home() / "bin" / "spark-class"), MASTER_CLASS,
        "--host", host, "--port", str(settings.spark_master_port),
        "--webui-port", str(settings.spark_master_webui_port),
    ]  # fmt: skip


def worker_command(settings: Settings, work_dir: Path, host: str = HOST, master_url: str | None = None) -> list[str]:
    return [
        str(spark_home() / "bin" / "spark-class"), WORKER_CLASS,
        "--host", host, "--webui-port", str(settings.spark_worker_webui_port),
        "--cores", str(settings.spark_worker_cores), "--memory", settings.spark_worker_memory,
        "--work-dir", str(work_dir / "work"), master_url or settings.standalone_master_url,
    ]  # fmt: skip


def master_state(settings: Settings, timeout_s: float = 5, host: str = HOST) -> dict:
    """The master's own JSON (``/json/``): workers, cores, active and completed applications."""
    url = f"http://{host}:{settings.spark_master_webui_port}/json/"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback http)
        return json.load(response)


def wait_for_worker(settings: Settings, timeout_s: float = 60) -> dict:
    """Block until the master counts an ALIVE worker; its state, or TimeoutError."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            state = master_state(settings)
            if state.get("aliveworkers", 0) >= 1:
                return state
            last = f"{state.get('aliveworkers', 0)} alive workers"
        except OSError as error:
            last = error
        time.sleep(0.5)
    raise TimeoutError(
        f"no Spark worker registered with {settings.standalone_master_url} within {timeout_s:.0f} s ({last})"
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    from stockpipe.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m stockpipe.streaming.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["master", "worker", "wait"])
    parser.add_argument("--host", default=HOST, help="address to bind and advertise (default 127.0.0.1)")
    parser.add_argument("--master", help="worker: the master's URL (default spark://127.0.0.1:MASTER_PORT)")
    parser.add_argument("--timeout", type=float, default=60.0, help="wait: seconds")
    args = parser.parse_args(argv)
    settings = load_settings()
    work_dir = settings.local_dir / "spark"
    if args.role == "wait":
        try:
            state = wait_for_worker(settings, args.timeout)
        except TimeoutError as error:
            raise SystemExit(str(error)) from None
        print(f"{state['aliveworkers']} worker(s), {state.get('cores')} cores, {state.get('memory')} MiB")
        return
    (work_dir / "tmp").mkdir(parents=True, exist_ok=True)
    (work_dir / "work").mkdir(parents=True, exist_ok=True)
    if args.role == "master":
        command = master_command(settings, args.host)
    else:
        command = worker_command(settings, work_dir, args.host, args.master)
    sys.stdout.flush()
    os.execve(command[0], command, daemon_env(work_dir, host=args.host))


if __name__ == "__main__":
    main()
