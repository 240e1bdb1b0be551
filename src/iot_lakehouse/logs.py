"""Logging set-up: key=value lines by default, JSON lines with LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def kv(**context: Any) -> str:
    """Render context as ``key=value`` pairs, quoting values with spaces."""
    parts = []
    for key, value in context.items():
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        if " " in text or "=" in text or text == "":
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class _JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "component": self.component,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(
    component: str, level: str = "INFO", fmt: str = "kv", logs_dir: Path | None = None
) -> None:
    """Send this process's logs to stderr and, if ``logs_dir`` is given, ``<component>.log``."""
    formatter: logging.Formatter
    if fmt == "json":
        formatter = _JsonFormatter(component)
    else:
        formatter = logging.Formatter(
            f"%(asctime)s level=%(levelname)s component={component} logger=%(name)s %(message)s"
        )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logs_dir is not None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logs_dir / f"{component}.log", encoding="utf-8"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "urllib3", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
