"""docker-compose.yaml: no container engine runs here, so the file is validated against the Compose
specification's JSON schema (compose_spec.json of the docker-compose 1.29.2 wheel, fetched by
`make test` into .local/cache/) and checked against the native stack: same services, ports,
STOCKPIPE_* variable names, loopback-only publishing, healthchecks and depends_on conditions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml

from stockpipe.config import ROOT, Settings, _env_name

COMPOSE = ROOT / "docker-compose.yaml"
SPEC = ROOT / ".local" / "cache" / "compose_spec.json"
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")

# native component -> (compose service, setting holding its port)
NATIVE_PORTS = {
    "postgres": ("postgres", "pg_port"),
    "redis": ("redis", None),  # from STOCKPIPE_REDIS_URL
    "kafka": ("kafka", None),  # from STOCKPIPE_KAFKA_BOOTSTRAP
    "simulator": ("simulator", "simulator_port"),
    "producer": ("producer", "producer_metrics_port"),
    "airflow": ("airflow-apiserver", "airflow_port"),
    "dashboard": ("dashboard", "dashboard_port"),
    "exporter": ("exporter", "exporter_port"),
    "prometheus": ("prometheus", "prometheus_port"),
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str) -> str:
    """What compose makes of ${VAR:-default} with nothing set: the default."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def default_port(component: str) -> int:
    fields = Settings.model_fields
    if component == "redis":
        return int(fields["redis_url"].default.rsplit(":", 1)[1].split("/")[0])
    if component == "kafka":
        return int(fields["kafka_bootstrap"].default.rsplit(":", 1)[1])
    return int(fields[NATIVE_PORTS[component][1]].default)


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for port in service.get("ports", []):
        host_ip, host_port, container_port = interpolate(str(port)).split(":")
        out.append((host_ip, int(host_port), int(container_port)))
    return out


def test_validates_against_the_compose_spec(compose):
    assert SPEC.exists(), f"{SPEC} missing: `make test` (infra/run-tests.sh) fetches it from the docker-compose wheel"
    schema = json.loads(SPEC.read_text())
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_spec_rejects_a_broken_file(compose):
    """The schema really checks: an unknown key or a bad depends_on condition is an error."""
    schema = json.loads(SPEC.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["helthcheck"] = {}
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(compose))
    broken["services"]["producer"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert not validator.is_valid(broken)


def test_services(compose):
    services = set(compose["services"])
    required = {
        "kafka", "kafka-ui", "postgres", "redis",
        "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
        "simulator", "producer", "dashboard", "exporter", "prometheus", "alerts",
    }  # fmt: skip
    assert required <= services, sorted(required - services)
    images = {name: s.get("image", "") for name, s in compose["services"].items()}
    assert images["kafka"].startswith("apache/kafka:")
    assert images["kafka-ui"].startswith("kafbat/kafka-ui:")
    assert images["postgres"] == "postgres:15"
    assert images["redis"].startswith("redis:7")
    assert "--appendonly" in compose["services"]["redis"]["command"]
    dockerfile = (ROOT / compose["services"]["airflow-apiserver"]["build"]["dockerfile"]).read_text()
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile


def test_ports_match_the_native_stack_and_stay_on_loopback(compose):
    seen: dict[int, str] = {}
    for name, service in compose["services"].items():
        for host_ip, host_port, _ in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip}: only 127.0.0.1 (nothing leaves loopback)"
            assert host_port not in seen, f"{name} and {seen.get(host_port)} both publish {host_port}"
            seen[host_port] = name
    for component, (service, _) in NATIVE_PORTS.items():
        port = default_port(component)
        assert ("127.0.0.1", port, port) in published(compose["services"][service]), (
            f"{service} must publish 127.0.0.1:{port} like the native {component}"
        )


def test_host_ports_follow_the_native_port_variables(compose):
    """`127.0.0.1:${STOCKPIPE_PG_PORT:-5433}:5433`: the same variable moves the port in both stacks."""
    exports = {
        "postgres": "STOCKPIPE_PG_PORT", "redis": "STOCKPIPE_REDIS_PORT", "kafka": "STOCKPIPE_KAFKA_PORT",
        "simulator": "STOCKPIPE_SIMULATOR_PORT", "producer": "STOCKPIPE_PRODUCER_METRICS_PORT",
        "airflow": "STOCKPIPE_AIRFLOW_PORT", "dashboard": "STOCKPIPE_DASHBOARD_PORT",
        "exporter": "STOCKPIPE_EXPORTER_PORT", "prometheus": "STOCKPIPE_PROMETHEUS_PORT",
    }  # fmt: skip
    from stockpipe.config import load_settings, shell_exports

    shell = shell_exports(load_settings())
    for component, variable in exports.items():
        assert f"export {variable}=" in shell, f"{variable} is not one of the native stack's port variables"
        ports = compose["services"][NATIVE_PORTS[component][0]]["ports"]
        assert any(f"${{{variable}:-{default_port(component)}}}" in str(p) for p in ports), (component, ports)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def test_environment_uses_the_settings_names_and_ports(compose):
    known = {_env_name(name) for name in Settings.model_fields} | {"POLYGON_API_KEY"}
    non_settings = {"STOCKPIPE_HOME", "STOCKPIPE_LOCAL"}  # read by scripts and config.project_root
    stockpipe_services = [n for n, s in compose["services"].items() if "STOCKPIPE_PG_HOST" in environment(s)]
    assert {"producer", "dashboard", "exporter", "airflow-scheduler", "simulator"} <= set(stockpipe_services)
    for name, service in compose["services"].items():
        env = environment(service)
        unknown = {k for k in env if k.startswith("STOCKPIPE_")} - known - non_settings
        assert not unknown, f"{name}: not settings of stockpipe.config: {sorted(unknown)}"
    env = environment(compose["services"]["producer"])
    # containers listen on the native port numbers: the port settings keep their defaults
    for field in ("pg_port", "simulator_port", "producer_metrics_port", "exporter_port", "dashboard_port",
                  "airflow_port", "prometheus_port"):  # fmt: skip
        assert int(env[_env_name(field)]) == Settings.model_fields[field].default, field
    assert env["STOCKPIPE_REDIS_URL"].endswith(f":{default_port('redis')}/0")
    assert env["STOCKPIPE_SIMULATOR_HOST"] == "simulator"
    assert env["STOCKPIPE_PG_HOST"] == "postgres"
    assert "STOCKPIPE_KAFKA_TOPIC" not in env  # the topics keep their contract names
    # the commands bind the container ports the mappings point at
    for service, port in (("simulator", 8090), ("dashboard", 8501)):
        assert str(port) in compose["services"][service]["command"]
    assert "5433" in compose["services"]["postgres"]["command"]
    assert "6380" in compose["services"]["redis"]["command"]


def test_healthchecks_and_dependencies(compose):
    services = compose["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert {"airflow-init", "stockpipe-init"} <= one_shot
    for name, service in services.items():
        if name not in one_shot:
            assert "healthcheck" in service, f"{name} has no healthcheck"
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, which has no check"
            if spec["condition"] == "service_completed_successfully":
                assert target in one_shot
    for component in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert services[component]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["stockpipe-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_prometheus_config():
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(ROOT / "infra" / "docker" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((ROOT / "infra" / "docker" / "prometheus.yml").read_text())
    native = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    assert [s["job_name"] for s in config["scrape_configs"]] == [s["job_name"] for s in native["scrape_configs"]]


def test_spark_cluster_profile(compose):
    """The native STOCKPIPE_SPARK_CLUSTER=standalone as the profile spark-cluster: master and worker from the
    stockpipe image (its Python runs the executors), web UIs on the same loopback ports and variables."""
    services = compose["services"]
    for name, role, setting in (
        ("spark-master", "master", "spark_master_webui_port"),
        ("spark-worker", "worker", "spark_worker_webui_port"),
    ):
        service = services[name]
        assert service["profiles"] == ["spark-cluster"], name
        assert service["image"] == services["producer"]["image"], f"{name}: executors need the stockpipe image"
        assert service["command"][:4] == ["python", "-m", "stockpipe.streaming.cluster", role]
        port = Settings.model_fields[setting].default
        assert ("127.0.0.1", port, port) in published(service)
        assert any(f"${{{_env_name(setting)}:-{port}}}" in str(p) for p in service["ports"]), service["ports"]
    master_port = Settings.model_fields["spark_master_port"].default
    assert f"spark://spark-master:{master_port}" in services["spark-worker"]["command"]
    assert services["spark-worker"]["depends_on"]["spark-master"]["condition"] == "service_healthy"
    # the Spark drivers run in the scheduler (LocalExecutor): the executors must reach them there
    scheduler = environment(services["airflow-scheduler"])
    assert scheduler["STOCKPIPE_SPARK_DRIVER_HOST"] == "airflow-scheduler"
    assert scheduler["STOCKPIPE_PG_HOST"] == "postgres"  # still every setting of the shared environment


# --- least privilege (DESIGN.md invariant 7) -----------------------------------------------------------
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "API_KEY", "WEBHOOK")
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]+\}")
# empty: the simulator / no webhook
OPTIONAL_SECRETS = ("POLYGON_API_KEY", "STOCKPIPE_ALERT_WEBHOOK_URL", "STOCKPIPE_USER_ALERTS_WEBHOOK_URL")


def raw_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def holders(compose: dict[str, Any], variable: str) -> set[str]:
    """The services whose environment carries ``variable``'s value (under any name)."""
    return {
        name
        for name, service in compose["services"].items()
        if any(re.search(r"\$\{" + variable + r"\b", value) for value in raw_environment(service).values())
    }


def test_no_default_passwords(compose):
    """Every secret is a required variable (`${VAR:?...}`): no password, token or key ships in the file."""
    text = COMPOSE.read_text()
    for name, default in INTERPOLATION.findall(text):
        if any(word in name for word in SECRET_WORDS) and name not in OPTIONAL_SECRETS:
            pytest.fail(f"${{{name}}} has a default ({default!r}): make it ${{{name}:?set {name} in .env}}")
    for service_name, service in compose["services"].items():
        for key, value in raw_environment(service).items():
            if any(word in key for word in SECRET_WORDS) and key not in OPTIONAL_SECRETS:
                assert REQUIRED.fullmatch(value), f"{service_name}: {key}={value!r} is not a required variable"
    assert holders(compose, "STOCKPIPE_PG_ADMIN_PASSWORD") == {"postgres", "stockpipe-init", "airflow-init"}


def test_each_service_gets_only_its_secrets(compose):
    assert holders(compose, "POLYGON_API_KEY") == {"producer", "airflow-scheduler", "airflow-init"}
    assert holders(compose, "STOCKPIPE_PG_WRITER_PASSWORD") == {
        "producer", "airflow-scheduler", "airflow-init", "stockpipe-init", "alerts"
    }  # fmt: skip
    # the rules role's password: the init job creates the role, the dashboard's Alerts page edits rules with it
    assert holders(compose, "STOCKPIPE_PG_RULES_PASSWORD") == {"stockpipe-init", "dashboard"}
    assert holders(compose, "STOCKPIPE_USER_ALERTS_WEBHOOK_URL") == {"alerts"}
    assert holders(compose, "STOCKPIPE_SIMULATOR_ADMIN_TOKEN") == {"simulator"}
    for reader in ("dashboard", "exporter"):
        env = raw_environment(compose["services"][reader])
        secrets = {k for k in env if any(word in k for word in SECRET_WORDS)}
        rules = {"STOCKPIPE_PG_RULES_PASSWORD"} if reader == "dashboard" else set()  # the Alerts page's edits
        read_only = {"STOCKPIPE_PG_READER_PASSWORD", "STOCKPIPE_REDIS_PASSWORD", "STOCKPIPE_AIRFLOW_API_PASSWORD"}
        assert secrets == read_only | rules
        assert env.get("STOCKPIPE_AIRFLOW_API_USER", "viewer") == "viewer"
    for name in ("kafka", "kafka-ui", "prometheus", "airflow-apiserver", "airflow-dag-processor", "airflow-triggerer"):
        env = raw_environment(compose["services"][name])
        assert not {k for k in env if any(word in k for word in SECRET_WORDS)}, name
    users = environment(compose["services"]["airflow-apiserver"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert "viewer:viewer" in users.split(",")


def test_redis_requires_its_password_and_keeps_it_off_the_command_line(compose):
    redis = compose["services"]["redis"]
    assert REQUIRED.fullmatch(raw_environment(redis)["STOCKPIPE_REDIS_PASSWORD"])
    command = " ".join(redis["command"])
    assert "requirepass" in command and "redis-server -" in command  # config from stdin
    assert "--requirepass" not in redis["command"]
    assert "STOCKPIPE_REDIS_PASSWORD" in " ".join(redis["healthcheck"]["test"])  # the check authenticates
    for name, service in compose["services"].items():
        url = raw_environment(service).get("STOCKPIPE_REDIS_URL", "")
        assert "@" not in url, f"{name}: the Redis password goes in STOCKPIPE_REDIS_PASSWORD, not the URL"


def test_containers_do_not_run_as_root(compose):
    for name, service in compose["services"].items():
        if "build" in service or service.get("image") == "stockpipe:local":
            assert not str(service.get("user", "0")).startswith(("0:", "root")), name
            assert service.get("user"), f"{name} runs as the image's default user"
