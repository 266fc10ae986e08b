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


def test_watchlist_from_comma_separated_env(monkeypatch):
    monkeypatch.setenv("STOCKPIPE_WATCHLIST", "aapl, msft,MSFT ,brk.b")
    assert Settings().watchlist == ["AAPL", "MSFT", "BRK.B"]


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("STOCKPIPE_PG_PORT", "not-a-port", "STOCKPIPE_PG_PORT"),
        ("STOCKPIPE_RATE_LIMIT_PER_MINUTE", "0", "STOCKPIPE_RATE_LIMIT_PER_MINUTE"),
        ("STOCKPIPE_WATCHLIST", "AAPL,$$$", "STOCKPIPE_WATCHLIST"),
        ("STOCKPIPE_SIMULATOR_CLOCK", "lunar", "STOCKPIPE_SIMULATOR_CLOCK"),
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
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "STOCKPIPE_PRODUCER_INTERVAL_S" in proc.stderr
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
