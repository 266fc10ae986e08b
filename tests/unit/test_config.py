import subprocess
import sys

import pytest

from stockpipe.config import ConfigError, Settings, env_example, load_settings


def test_defaults_run_on_the_simulator(monkeypatch):
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    settings = load_settings(polygon_api_key=None)
    assert settings.uses_simulator
    assert settings.market_data_url == "http://127.0.0.1:8090"
    assert settings.watchlist == ["AAPL", "GOOGL", "MSFT", "AMZN", "TSLA"]


def test_polygon_key_from_unprefixed_variable_switches_source(monkeypatch):
    monkeypatch.setenv("POLYGON_API_KEY", "k-123")
    settings = Settings()
    assert not settings.uses_simulator
    assert settings.market_data_key == "k-123"
    assert "k-123" not in repr(settings)


def test_massive_key_switches_source_to_massive(monkeypatch):
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    monkeypatch.delenv("STOCKPIPE_POLYGON_BASE_URL", raising=False)
    monkeypatch.setenv("MASSIVE_API_KEY", "mk-456")
    settings = Settings()
    assert settings.market_data_key == "mk-456"
    assert settings.market_data_url == "https://api.massive.com"  # api.polygon.io is still served


def test_watchlist_from_comma_separated_env(monkeypatch):
    monkeypatch.setenv("STOCKPIPE_WATCHLIST", "aapl, msft,MSFT ,brk.b")
    assert Settings().watchlist == ["AAPL", "MSFT", "BRK.B"]


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("STOCKPIPE_PG_PORT", "not-a-port", "STOCKPIPE_PG_PORT"),
        ("STOCKPIPE_RATE_LIMIT_PER_MINUTE", "0", "STOCKPIPE_RATE_LIMIT_PER_MINUTE"),
        ("STOCKPIPE_BACKFILL_SHARE", "1", "STOCKPIPE_BACKFILL_SHARE"),
        ("STOCKPIPE_BACKFILL_SHARE", "-0.2", "STOCKPIPE_BACKFILL_SHARE"),
        ("STOCKPIPE_BACKFILL_SHARE", "half", "STOCKPIPE_BACKFILL_SHARE"),
        ("STOCKPIPE_WATCHLIST", "AAPL,$$$", "STOCKPIPE_WATCHLIST"),
        ("STOCKPIPE_SIMULATOR_CLOCK", "lunar", "STOCKPIPE_SIMULATOR_CLOCK"),
        ("STOCKPIPE_KAFKA_BOOTSTRAP", "localhost", "STOCKPIPE_KAFKA_BOOTSTRAP (got 'localhost')"),
        ("STOCKPIPE_KAFKA_BOOTSTRAP", "127.0.0.1:9092,other", "STOCKPIPE_KAFKA_BOOTSTRAP"),
        ("STOCKPIPE_KAFKA_BOOTSTRAP", "127.0.0.1:909200", "STOCKPIPE_KAFKA_BOOTSTRAP"),
        ("STOCKPIPE_KAFKA_BOOTSTRAP", "", "STOCKPIPE_KAFKA_BOOTSTRAP"),
        ("STOCKPIPE_REDIS_URL", "127.0.0.1:6380", "STOCKPIPE_REDIS_URL"),
        ("STOCKPIPE_REDIS_URL", "redis://127.0.0.1:port/0", "STOCKPIPE_REDIS_URL"),
        ("STOCKPIPE_REDIS_URL", "redis://127.0.0.1:6380/zero", "STOCKPIPE_REDIS_URL"),
        ("STOCKPIPE_REDIS_URL", "http://127.0.0.1:6380/0", "STOCKPIPE_REDIS_URL"),
        ("STOCKPIPE_AIRFLOW_API_URL", "127.0.0.1:8080", "STOCKPIPE_AIRFLOW_API_URL"),
        ("STOCKPIPE_AIRFLOW_API_URL", "http://127.0.0.1:99999", "STOCKPIPE_AIRFLOW_API_URL"),
    ],
)
def test_bad_setting_is_one_sentence_naming_it(monkeypatch, variable, value, fragment):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert fragment in message
    assert message.count("\n") == 0 and message.endswith(".")


def test_bad_setting_stops_a_process_with_exit_code_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "stockpipe.producer", "--once"],
        env={"STOCKPIPE_PRODUCER_INTERVAL_S": "-5", "PATH": "/usr/bin", "PYTHONPATH": "plugins"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "STOCKPIPE_PRODUCER_INTERVAL_S" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STOCKPIPE_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        ("STOCKPIPE_KAFKA_BOOTSTRAP", "kafka-1:9092, kafka-2:9092,[::1]:9094"),
        ("STOCKPIPE_REDIS_URL", "redis://127.0.0.1:6380/0"),
        ("STOCKPIPE_REDIS_URL", "rediss://:pw@cache.internal"),
        ("STOCKPIPE_REDIS_URL", "unix:///run/redis/redis.sock?db=2"),
        ("STOCKPIPE_AIRFLOW_API_URL", ""),
        ("STOCKPIPE_AIRFLOW_API_URL", "https://airflow.internal/api/"),
    ],
)
def test_good_addresses_are_accepted(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    load_settings()


def test_kafka_bootstrap_list_is_normalised(monkeypatch):
    monkeypatch.setenv("STOCKPIPE_KAFKA_BOOTSTRAP", " a:9092 , b:9093")
    assert load_settings().kafka_bootstrap == "a:9092,b:9093"


def test_a_redis_password_in_a_bad_url_is_not_echoed(monkeypatch):
    monkeypatch.setenv("STOCKPIPE_REDIS_URL", "redis://:s3cret-value@127.0.0.1:port/0")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "STOCKPIPE_REDIS_URL" in str(raised.value) and "s3cret-value" not in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STOCKPIPE_KAFKA_BOOTSTRAP", "localhost"),
        ("STOCKPIPE_REDIS_URL", "localhost:6380"),
        ("STOCKPIPE_AIRFLOW_API_URL", "localhost:8080"),
    ],
)
def test_shell_exports_stop_with_one_sentence_on_a_bad_address(variable, value):
    """infra/stack.sh evaluates ``--shell``: a bad address must not be an IndexError traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "stockpipe.config", "--shell"],
        env={variable: value, "PATH": "/usr/bin", "PYTHONPATH": "plugins"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and repr(value) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_password_values_are_not_echoed(monkeypatch):
    monkeypatch.setenv("STOCKPIPE_PG_PORT", "70000")
    monkeypatch.setenv("STOCKPIPE_PG_WRITER_PASSWORD", "s3cret-value")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "s3cret-value" not in str(raised.value)


def test_env_example_is_generated_from_settings():
    with open(".env.example") as handle:
        assert handle.read() == env_example(), "regenerate: python -m stockpipe.config --env-example > .env.example"


def test_configuration_doc_is_generated_from_settings():
    from stockpipe.config import markdown_table

    with open("docs/configuration.md") as handle:
        assert handle.read().endswith(markdown_table()), (
            "regenerate docs/configuration.md (see its first lines): python -m stockpipe.config --markdown"
        )


def test_a_failed_cross_field_check_does_not_echo_every_setting(monkeypatch):
    """A model-level check has no field: pydantic's error input is then every setting, secrets
    included; the one-sentence error must not print it."""
    from pydantic import ValidationError, model_validator

    from stockpipe.config import Settings, _describe

    class Checked(Settings):
        @model_validator(mode="after")
        def _never(self) -> Settings:
            raise ValueError("these two settings disagree")

    monkeypatch.setenv("STOCKPIPE_PG_WRITER_PASSWORD", "s3cret-value")
    with pytest.raises(ValidationError) as raised:
        Checked()
    sentence = _describe(raised.value)
    assert "these two settings disagree" in sentence
    assert "s3cret-value" not in sentence


def test_stockpipe_dotenv_is_read_instead_of_the_projects_env(monkeypatch, tmp_path):
    # make test points STOCKPIPE_DOTENV at a copy of .env that keeps only where the services are
    # (was: every process read the project's .env, so a demo's .env changed what the tests ran)
    monkeypatch.delenv("STOCKPIPE_LOG_LEVEL", raising=False)
    monkeypatch.delenv("STOCKPIPE_SECRETS_FILE", raising=False)
    chosen = tmp_path / "chosen.env"
    chosen.write_text("STOCKPIPE_LOG_LEVEL=DEBUG\nSTOCKPIPE_FEED=websocket\n")
    monkeypatch.setenv("STOCKPIPE_DOTENV", str(chosen))
    assert (load_settings().log_level, load_settings().feed) == ("DEBUG", "websocket")
    monkeypatch.setenv("STOCKPIPE_DOTENV", "")  # none at all: the defaults
    assert (load_settings().log_level, load_settings().feed) == ("INFO", "rest")


def test_stockpipe_dotenv_of_a_process_with_scoped_secrets(monkeypatch, tmp_path):
    # a scoped process (STOCKPIPE_SECRETS_FILE) reads its secrets from that file only and the other
    # settings from STOCKPIPE_DOTENV's file, never a secret from it
    monkeypatch.delenv("STOCKPIPE_LOG_LEVEL", raising=False)
    monkeypatch.delenv("STOCKPIPE_PG_WRITER_PASSWORD", raising=False)
    secrets = tmp_path / "scope.env"
    secrets.write_text("STOCKPIPE_PG_WRITER_PASSWORD=from-the-scope\n")
    chosen = tmp_path / "chosen.env"
    chosen.write_text("STOCKPIPE_LOG_LEVEL=WARNING\nSTOCKPIPE_PG_WRITER_PASSWORD=from-dotenv\n")
    monkeypatch.setenv("STOCKPIPE_SECRETS_FILE", str(secrets))
    monkeypatch.setenv("STOCKPIPE_DOTENV", str(chosen))
    settings = load_settings()
    assert settings.log_level == "WARNING"
    assert settings.pg_writer_password.get_secret_value() == "from-the-scope"


def test_a_test_run_keeps_only_where_the_services_are(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "STOCKPIPE_FEED=websocket\nSTOCKPIPE_WEBSOCKET_SYMBOLS=all\n# STOCKPIPE_PG_PORT=1\n"
        "STOCKPIPE_PG_PORT=5440\nexport STOCKPIPE_KAFKA_BOOTSTRAP=127.0.0.1:9095\n"
        "STOCKPIPE_REDIS_URL=redis://127.0.0.1:6390/0\nSTOCKPIPE_RETENTION_DAYS=2\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "stockpipe.config", "--locations-of", str(dotenv)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "STOCKPIPE_PG_PORT=5440",
        "export STOCKPIPE_KAFKA_BOOTSTRAP=127.0.0.1:9095",
        "STOCKPIPE_REDIS_URL=redis://127.0.0.1:6390/0",
    ]
