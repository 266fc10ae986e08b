"""Operators for stockpipe's long-running jobs, each the one task of a ``@continuous`` DAG.

:class:`StoppableJobMixin` is what both share: while the task runs, a thread watches the DAG's pause
state (``stop_when_paused``; Airflow itself lets a running task run on after a pause) and stops the
job when it gets paused; on kill (task marked failed, run timed out, DAG paused) the job gets SIGTERM
first and is killed only if it is still alive after ``stop_grace_s``. No process is left behind.

:class:`StockpipeSparkSubmitOperator` — SparkSubmitOperator, the ``spark_default`` connection decides
the master:

* The job builds its SparkSession from ``STOCKPIPE_*`` settings (``stockpipe.streaming.spark``),
  so the master of the connection is passed down as ``STOCKPIPE_SPARK_MASTER``; the driver and its
  Python workers use this interpreter (the project venv); everything binds to 127.0.0.1.
* The Kafka connector jars (``infra/jars/spark``) go on spark-submit's ``--jars``.
* Stopping: the job's Python driver gets SIGTERM, stops its query after the running micro-batch and
  exits; only if it is still alive after ``stop_grace_s`` is spark-submit killed.

Other masters: set the ``spark_default`` connection's host to ``spark://HOST:7077`` (standalone)
or ``k8s://https://API:443`` (Kubernetes; add ``deploy-mode`` and ``namespace`` in its extra and
ship the ``stockpipe`` package to the image) — no DAG change.

:class:`ProducerServiceOperator` — ``python -m stockpipe.producer`` (the long-running loop) as a child
process of the task, with the project venv's interpreter: its log lines go into the task log, it
holds only the producer's secrets (:data:`stockpipe.scopes.SCOPES`), and it dies with the task
(``PR_SET_PDEATHSIG``). The task fails when the child dies, and first queues the DAG's next run
(``relaunch``; the ``@continuous`` schedule would too, but only after up to a minute), which starts a
new producer; it succeeds when it stopped the child because the DAG was paused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import BaseOperator

from stockpipe.config import ROOT


def spark_application(name: str) -> str:
    return str(ROOT / "spark_jobs" / name)


class StoppableJobMixin:
    """Pause watch and graceful stop of a job a task runs for as long as the job lives.

    A subclass implements :meth:`_stop_job` (SIGTERM, wait up to ``stop_grace_s``; True if the job
    ended) and calls :meth:`_start_pause_watch` / :meth:`_end_pause_watch` around its run."""

    job_name = "job"

    def _init_stop(self, *, stop_grace_s: float, stop_when_paused: bool, pause_poll_s: float) -> None:
        self.stop_grace_s = stop_grace_s
        self.stop_when_paused = stop_when_paused
        self.pause_poll_s = pause_poll_s
        self._stop_watch = threading.Event()
        self._stopped_for_pause = threading.Event()

    def _start_pause_watch(self, context: Any) -> None:
        self._stop_watch.clear()
        self._stopped_for_pause.clear()
        if self.stop_when_paused:
            dag_id = context["dag"].dag_id
            threading.Thread(target=self._watch_pause, args=(dag_id,), daemon=True, name="pause-watch").start()

    def _end_pause_watch(self) -> None:
        self._stop_watch.set()

    def _watch_pause(self, dag_id: str) -> None:
        """Stop the job when its DAG gets paused (Airflow itself lets running tasks run on)."""
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.restart import dag_is_paused

        settings = task_settings()
        while not self._stop_watch.wait(self.pause_poll_s):
            try:
                paused = dag_is_paused(settings, dag_id)
            except Exception as error:  # the API may be restarting: try again later
                self.log.debug("pause check failed: %s", error)  # type: ignore[attr-defined]
                continue
            if paused:
                self.log.warning("DAG %s was paused: stopping the %s", dag_id, self.job_name)  # type: ignore[attr-defined]
                self._stopped_for_pause.set()
                self._stop_job()
                return

    def _stop_job(self) -> bool:
        raise NotImplementedError

    def _queue_relaunch(self, context: Any, reason: str) -> None:
        """Queue the DAG's next run now (see :func:`stockpipe.airflow.restart.queue_next_run`), so the
        job is back within seconds, not when the scheduler notices; never fails the caller."""
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.restart import queue_next_run

        dag_id = context["dag"].dag_id
        try:
            run_id = queue_next_run(task_settings(), dag_id, reason)
        except Exception as error:  # the continuous schedule still relaunches it, later
            self.log.warning("could not queue the next run of %s (%s): the schedule will", dag_id, error)  # type: ignore[attr-defined]
            return
        self.log.info("next run of %s: %s", dag_id, run_id or "already queued")  # type: ignore[attr-defined]

    def on_kill(self) -> None:
        self._stop_watch.set()
        if not self._stop_job():
            self.log.warning(  # type: ignore[attr-defined]
                "%s still running after %.0fs: killing it", self.job_name, self.stop_grace_s
            )
        super().on_kill()  # type: ignore[misc]


class StockpipeSparkSubmitOperator(StoppableJobMixin, SparkSubmitOperator):
    job_name = "Spark job"

    def __init__(
        self,
        *,
        stop_grace_s: float = 60.0,
        stop_when_paused: bool = False,
        pause_poll_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("conn_id", "spark_default")
        kwargs.setdefault("verbose", False)
        super().__init__(**kwargs)
        self._init_stop(stop_grace_s=stop_grace_s, stop_when_paused=stop_when_paused, pause_poll_s=pause_poll_s)

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
        self._start_pause_watch(context)
        try:
            return super().execute(context)
        finally:
            self._end_pause_watch()

    def _stop_job(self) -> bool:
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


# --- the producer service ------------------------------------------------------------------------
#: What the producer's process inherits from the task's environment besides the STOCKPIPE_* settings
#: (never AIRFLOW__* — the metadata database's password, the JWT secret — nor any other secret).
_INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "NO_PROXY")


def producer_env(settings: Any, context: Any | None = None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``python -m stockpipe.producer`` under Airflow.

    Where things are comes from the task's settings (the Airflow connections, as for the Spark jobs);
    the non-secret ``STOCKPIPE_*`` variables of the task pass through; the secrets are exactly the
    ``producer`` scope of :mod:`stockpipe.scopes` (writer role, Redis, Kafka login, market-data key), and
    ``STOCKPIPE_SECRETS_FILE`` points at nothing, so the process never reads ``.local/secrets.env``
    (which holds the PostgreSQL admin password, among others)."""
    from stockpipe.airflow.connections import kafka_env
    from stockpipe.config import SECRETS_FILE_ENV, secret_fields
    from stockpipe.scopes import SCOPES, scope_values

    environ = dict(os.environ if environ is None else environ)
    secret_names = {"STOCKPIPE_" + name.upper() for name in secret_fields()} | {"MASSIVE_API_KEY", "POLYGON_API_KEY"}
    env = {k: v for k, v in environ.items() if k in _INHERITED}
    env.update(
        {
            k: v
            for k, v in environ.items()
            if k.startswith("STOCKPIPE_") and k not in secret_names and k != SECRETS_FILE_ENV
        }
    )
    kafka = kafka_env(settings)
    if "kafka_sasl_password" not in SCOPES["producer"]:  # pragma: no cover - the scope holds the login
        kafka.pop("STOCKPIPE_KAFKA_SASL_PASSWORD", None)
    env.update(
        {
            "STOCKPIPE_HOME": str(ROOT),
            SECRETS_FILE_ENV: os.devnull,
            **kafka,
            "STOCKPIPE_REDIS_URL": settings.redis_url,
            "STOCKPIPE_PG_HOST": settings.pg_host,
            "STOCKPIPE_PG_PORT": str(settings.pg_port),
            "STOCKPIPE_PG_DATABASE": settings.pg_database,
            "STOCKPIPE_PG_WRITER_USER": settings.pg_writer_user,
            "PYTHONUNBUFFERED": "1",
            "PATH": str(Path(sys.executable).parent) + os.pathsep + environ.get("PATH", "/usr/bin:/bin"),
        }
    )
    env.update(scope_values(settings, "producer"))
    if context is not None:  # the cycles it records in ops.ingest_cycles name this run
        env["AIRFLOW_CTX_DAG_ID"] = context["dag"].dag_id
        env["AIRFLOW_CTX_DAG_RUN_ID"] = context["run_id"]
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The child gets SIGTERM when the task process dies (even by SIGKILL): never two producers."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class ProducerExited(RuntimeError):
    """The producer process ended by itself; the task fails so the continuous schedule relaunches it."""


class ProducerServiceOperator(StoppableJobMixin, BaseOperator):
    """Runs the producer's long-running loop for as long as the task lives (see the module doc)."""

    job_name = "producer"
    template_fields = ()

    def __init__(
        self,
        *,
        module: str = "stockpipe.producer",
        args: list[str] | None = None,
        stop_grace_s: float = 30.0,
        stop_when_paused: bool = True,
        pause_poll_s: float = 10.0,
        relaunch: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.relaunch = relaunch
        self.module = module
        self.args = list(args or [])
        self._init_stop(stop_grace_s=stop_grace_s, stop_when_paused=stop_when_paused, pause_poll_s=pause_poll_s)
        self._process: subprocess.Popen[str] | None = None
        self._killed = threading.Event()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        """The child's log lines into the task log, as they come."""
        assert process.stdout is not None
        for line in process.stdout:
            self.log.info("%s", line.rstrip("\n"))

    def execute(self, context: Any) -> dict[str, Any]:
        from stockpipe.airflow.connections import task_settings

        settings = task_settings()
        if settings.producer_mode == "supervisor":  # another process is the loop (supervisord, compose)
            self._stand_down(settings, context["dag"].dag_id)
        if settings.producer_mode == "airflow":  # make up pauses this DAG then; someone unpaused it
            self.log.warning(
                "STOCKPIPE_PRODUCER_MODE=airflow: market_ingest's runs produce too (with nothing left to fetch "
                "they make no API call); pause %s or set STOCKPIPE_PRODUCER_MODE=service",
                context["dag"].dag_id,
            )
        command = [sys.executable, "-m", self.module, *self.args]
        self._killed.clear()
        self._process = process = subprocess.Popen(
            command,
            cwd=str(ROOT),
            env=producer_env(settings, context),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=_die_with_parent,
        )
        self.log.info("producer started: pid %d (%s)", process.pid, " ".join(command[1:]))
        pump = threading.Thread(target=self._pump, args=(process,), daemon=True, name="producer-log")
        pump.start()
        self._start_pause_watch(context)
        try:
            # poll, not wait(): on_kill runs in a signal handler on this thread and polls the child too
            while (code := process.poll()) is None:
                time.sleep(0.25)
        finally:
            self._end_pause_watch()
            pump.join(timeout=5)
        if self._stopped_for_pause.is_set():
            self.log.info("producer stopped (exit code %s): the DAG is paused", code)
            return {"pid": process.pid, "exit_code": code, "stopped": "paused"}
        if self._killed.is_set():  # marked failed (a restart) or timed out: the next run starts a new one
            why = f"the producer (pid {process.pid}) stopped because its task was killed (exit code {code})"
        else:
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            why = f"the producer (pid {process.pid}) {how}"
        if self.relaunch:
            self._queue_relaunch(context, f"relaunch: {why}")
        raise ProducerExited(f"{why}; the task fails and the next run of {context['dag'].dag_id} relaunches it")

    def _stand_down(self, settings: Any, dag_id: str) -> None:
        """STOCKPIPE_PRODUCER_MODE=supervisor: pause this DAG (else the continuous schedule would start one
        skipped run after another) and skip."""
        from airflow.sdk.exceptions import AirflowSkipException

        from stockpipe.airflow.restart import set_dag_paused

        reason = (
            f"STOCKPIPE_PRODUCER_MODE=supervisor: supervisord's producer program is the producer, so {dag_id} "
            "pauses itself and skips (set STOCKPIPE_PRODUCER_MODE=service and unpause it to run the producer here)"
        )
        try:
            set_dag_paused(settings, dag_id, True)
        except Exception as error:  # no API: at least don't spin through empty runs
            self.log.warning("could not pause %s: %s", dag_id, error)
            time.sleep(60)
        raise AirflowSkipException(reason)

    def _stop_job(self) -> bool:
        """SIGTERM the producer and wait up to ``stop_grace_s`` for it; SIGKILL if it hangs."""
        process = self._process
        if process is None or process.poll() is not None:
            return True
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + self.stop_grace_s
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                return False
            time.sleep(0.1)
        return True

    def on_kill(self) -> None:
        self._killed.set()
        super().on_kill()
