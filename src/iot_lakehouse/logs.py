"""Logging set-up: key=value lines by default, JSON lines with LOG_FORMAT=json.

Code logs ``logger.info("batch committed %s", kv(job="silver", batch_id=3))``. In the default
format that reads ``… batch committed job=silver batch_id=3``; in JSON the pairs become the
``context`` object (``{"message": "batch committed", "context": {"job": "silver", …}}``), so
both formats can be searched by key.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any


class KV(str):
    """``key=value`` text that keeps its pairs, for the JSON formatter."""

    context: dict[str, Any]

    def __new__(cls, text: str, context: dict[str, Any]) -> KV:
        made = super().__new__(cls, text)
        made.context = context
        return made

    def __reduce__(self) -> tuple[type[KV], tuple[str, dict[str, Any]]]:
        return (KV, (str(self), self.context))


def kv(**context: Any) -> KV:
    """Render context as ``key=value`` pairs, quoting values with spaces."""
    parts = []
    for key, value in context.items():
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        if " " in text or "=" in text or text == "" or '"' in text:
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return KV(" ".join(parts), context)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, component, level, logger, message, context."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        context: dict[str, Any] = {}
        args = record.args if isinstance(record.args, tuple) else ()
        if isinstance(record.msg, KV) and not args:  # logger.info(kv(event="…", …))
            context = {k: _json_value(v) for k, v in record.msg.context.items()}
            message = str(context.pop("event", "")) or str(record.msg)
        elif any(isinstance(arg, KV) for arg in args):
            for arg in args:
                if isinstance(arg, KV):
                    context.update({k: _json_value(v) for k, v in arg.context.items()})
            plain = tuple("" if isinstance(arg, KV) else arg for arg in args)
            message = (str(record.msg) % plain).strip()
        else:
            message = record.getMessage()
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "component": self.component,
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "context": context,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def kv_formatter(component: str) -> logging.Formatter:
    return logging.Formatter(
        f"%(asctime)s level=%(levelname)s component={component} logger=%(name)s %(message)s"
    )


LOG_MAX_BYTES = 20 * 1024 * 1024  # a log file is rotated at this size ...
LOG_BACKUPS = 3  # ... keeping this many older files (<name>.1 is the newest of them)


def replace_root_handlers(handlers: list[logging.Handler], level: str | int) -> None:
    """Make ``handlers`` the root logger's only handlers (the old ones closed) at ``level``."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def configure_logging(
    component: str,
    level: str = "INFO",
    fmt: str = "kv",
    logs_dir: Path | None = None,
    stream: IO[str] | None = None,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> None:
    """Send this process's logs to ``stream`` (default stdout) and, if ``logs_dir`` is given,
    to ``<logs_dir>/<component>.log`` as well, in the same format, rotated at ``max_bytes``
    with ``backups`` older files kept."""
    formatter = JsonFormatter(component) if fmt == "json" else kv_formatter(component)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stdout)]
    if logs_dir is not None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                logs_dir / f"{component}.log",
                maxBytes=max_bytes,
                backupCount=backups,
                encoding="utf-8",
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
    replace_root_handlers(handlers, level)
    for noisy in ("py4j", "urllib3", "great_expectations", "tornado", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def rotate_if_large(path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS) -> bool:
    """Rotate a file another process appends to (a child's captured output) once it is larger
    than ``max_bytes``: copy it to ``<path>.1`` (older copies shift up, ``backups`` kept), then
    truncate it in place. The writer opened it for appending, so it goes on at the new end;
    only what it writes between the copy and the truncation is lost. True if it rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    if backups > 0:
        with path.open("rb") as src, path.with_name(f"{path.name}.1").open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    os.truncate(path, 0)
    return True
