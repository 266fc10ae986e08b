"""Logging set-up shared by stockpipe's processes: plain or JSON lines, secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

# apiKey=... in URLs (urllib3 and the massive client put the key in query strings and errors).
_KEY_IN_URL = re.compile(r"(?i)(apikey=)[^&\s'\"]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    text = _BEARER.sub(r"\1***", _KEY_IN_URL.sub(r"\1***", text))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites every record's message so no API key or password survives into a log."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, default=str)


def setup_logging(
    level: str = "INFO", json_lines: bool = False, secrets: tuple[str, ...] = (), *, stream: TextIO | None = None
) -> None:
    """The one logging set-up of every stockpipe process: one handler on the root logger, plain or
    JSON lines, secrets redacted, chatty libraries at WARNING. ``stream``: stdout unless given
    (a command whose stdout is its output logs to stderr)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(RedactingFilter(secrets))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "kafka", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
