"""SparkSubmitOperator for stockpipe's jobs: the ``spark_default`` connection decides the master.

* The job builds its SparkSession from ``STOCKPIPE_*`` settings (``stockpipe.streaming.spark``),
  so the master of the connection is passed down as ``STOCKPIPE_SPARK_MASTER``; the driver and its
  Python workers use this interpreter (the project venv); everything binds to 127.0.0.1.
* The Kafka connector jars (``infra/jars/spark``) go on spark-submit's ``--jars``.
* Stopping is clean: on kill (task marked failed, run timed out, DAG paused — see
  ``stop_when_paused``), the job's Python driver gets SIGTERM first, stops its query after the
  running micro-batch and exits; only if it is still alive after ``stop_grace_s`` is spark-submit
  killed. No JVM is left behind either way.

Other masters: set the ``spark_default`` connection's host to ``spark://HOST:7077`` (standalone)
or ``k8s://https://API:443`` (Kubernetes; add ``deploy-mode`` and ``namespace`` in its extra and
ship the ``stockpipe`` package to the image) — no DAG change.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from stockpipe.config import ROOT


def spark_application(name: str) -> str:
    return str(ROOT / "spark_jobs" / name)


class StockpipeSparkSubmitOperator(SparkSubmitOperator):
    def __init__(self, *, stop_grace_s: float = 60.0, stop_when_paused: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("conn_id", "spark_default")
        kwargs.setdefault("verbose", False)
        super().__init__(**kwargs)
        self.stop_grace_s = stop_grace_s
        self.stop_when_paused = stop_when_paused
        self._stop_watch = threading.Event()

    def _job_env(self) -> dict[str, str]:
        from stockpipe.airflow.connections import kafka_env, task_settings

        settings = task_settings()
        venv_bin = str(Path(sys.executable).parent)
        env = {
            "STOCKPIPE_HOME": str(ROOT),
            "STOCKPIPE_SPARK_MASTER": settings.spark_master,
            **kafka_env(settings),  # bootstrap and security, from kafka_default
            "STOCKPIPE_REDIS_URL": settings.redis_url,
            "STOCKPIPE_REDIS_PASSWORD": settings.redis_password.get_secret_value(),
            "STOCKPIPE_PG_HOST": settings.pg_host,
            "STOCKPIPE_PG_PORT": str(settings.pg_port),
            "STOCKPIPE_PG_DATABASE": settings.pg_database,
            "STOCKPIPE_PG_WRITER_USER": settings.pg_writer_user,
            "STOCKPIPE_PG_WRITER_PASSWORD": settings.pg_writer_password.get_secret_value(),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        }
        return env

    def execute(self, context: Any) -> None:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.streaming.spark import connector_jars

        self.env_vars = {**self._job_env(), **(self.env_vars or {})}
        # Under spark-submit the driver JVM is up before the job's SparkSession config is read, so
        # the Kafka connector must be on the command line (--jars), not only in spark.jars.
        self.jars = self.jars or ",".join(connector_jars(task_settings()))
        watcher = None
        if self.stop_when_paused:
            watcher = threading.Thread(target=self._watch_pause, args=(context["dag"].dag_id,), daemon=True)
            watcher.start()
        try:
            return super().execute(context)
        finally:
            self._stop_watch.set()

    def _watch_pause(self, dag_id: str) -> None:
        """Stop the job when its DAG gets paused (Airflow itself lets running tasks run on)."""
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.restart import dag_is_paused

        settings = task_settings()
        while not self._stop_watch.wait(30):
            try:
                paused = dag_is_paused(settings, dag_id)
            except Exception as error:  # the API may be restarting: try again later
                self.log.debug("pause check failed: %s", error)
                continue
            if paused:
                self.log.warning("DAG %s was paused: stopping the Spark job", dag_id)
                self._stop_driver()
                return

    def _stop_driver(self) -> bool:
        """SIGTERM the job's Python driver and wait for spark-submit to exit; True if it did."""
        import psutil

        hook = getattr(self, "_hook", None)
        process = getattr(hook, "_submit_sp", None) if hook else None
        if process is None or process.poll() is not None:
            return True
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return True
        drivers = [c for c in children if "python" in (c.name() or "").lower()] or children
        for child in drivers:
            try:
                child.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        if not drivers:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_grace_s)
            return True
        except Exception:
            return False

    def on_kill(self) -> None:
        self._stop_watch.set()
        if not self._stop_driver():
            self.log.warning("Spark job still running after %.0fs: killing spark-submit", self.stop_grace_s)
        super().on_kill()
