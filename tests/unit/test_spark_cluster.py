"""STOCKPIPE_SPARK_CLUSTER=standalone: the derived master URL, and the local cluster's commands
(loopback only, ports and sizes from the settings). The cluster itself: tests/integration/test_spark_standalone.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockpipe.config import ConfigError, load_settings
from stockpipe.streaming import cluster


def test_local_is_the_default_and_keeps_the_master():
    settings = load_settings(spark_cluster="local")
    assert settings.spark_master == "local[2]"


def test_standalone_derives_the_master_from_its_port(monkeypatch):
    monkeypatch.delenv("STOCKPIPE_SPARK_MASTER", raising=False)
    monkeypatch.setenv("STOCKPIPE_SPARK_CLUSTER", "standalone")
    monkeypatch.setenv("STOCKPIPE_SPARK_MASTER_PORT", "7177")
    assert load_settings().spark_master == "spark://127.0.0.1:7177"


def test_an_explicit_master_wins_over_the_local_cluster(monkeypatch):
    monkeypatch.setenv("STOCKPIPE_SPARK_CLUSTER", "standalone")
    monkeypatch.setenv("STOCKPIPE_SPARK_MASTER", "spark://spark-master:7077")
    assert load_settings().spark_master == "spark://spark-master:7077"


def test_a_bad_memory_size_names_the_setting():
    with pytest.raises(ConfigError, match="STOCKPIPE_SPARK_WORKER_MEMORY"):
        load_settings(spark_worker_memory="2 gigs")


def test_daemons_bind_loopback_with_the_settings_ports_and_sizes(tmp_path: Path):
    settings = load_settings(
        spark_master_port=7177, spark_master_webui_port=7188, spark_worker_webui_port=7189,
        spark_worker_cores=3, spark_worker_memory="3g",
    )  # fmt: skip
    master = cluster.master_command(settings)
    assert master[1] == cluster.MASTER_CLASS and Path(master[0]).name == "spark-class"
    assert master[master.index("--host") + 1] == "127.0.0.1"
    assert master[master.index("--port") + 1] == "7177" and master[master.index("--webui-port") + 1] == "7188"
    worker = cluster.worker_command(settings, tmp_path)
    assert worker[-1] == "spark://127.0.0.1:7177"
    assert worker[worker.index("--host") + 1] == "127.0.0.1" and worker[worker.index("--webui-port") + 1] == "7189"
    assert worker[worker.index("--cores") + 1] == "3" and worker[worker.index("--memory") + 1] == "3g"
    assert worker[worker.index("--work-dir") + 1] == str(tmp_path / "work")
    env = cluster.daemon_env(tmp_path, base={"PATH": "/usr/bin"})
    # SPARK_LOCAL_IP is what keeps the web UIs off 0.0.0.0; a taken port must fail, not move on
    assert env["SPARK_LOCAL_IP"] == env["SPARK_MASTER_HOST"] == "127.0.0.1"
    assert "-Dspark.port.maxRetries=0" in env["SPARK_DAEMON_JAVA_OPTS"]
    assert "-Dspark.master.rest.enabled=false" in env["SPARK_MASTER_OPTS"]
    assert (Path(env["SPARK_HOME"]) / "bin" / "spark-class").is_file()
