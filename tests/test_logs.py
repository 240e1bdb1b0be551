"""Log lines: key=value by default, JSON with LOG_FORMAT=json, to the stream and the file."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from iot_lakehouse.logs import configure_logging, kv

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_kv_quotes_what_would_break_a_pair() -> None:
    assert kv(job="silver", rows=3, rate=2.25) == "job=silver rows=3 rate=2.2"
    assert kv(error="no such file", empty="", eq="a=b") == (
        'error="no such file" empty="" eq="a=b"'
    )
    assert kv(job="gold").context == {"job": "gold"}


def test_json_lines_carry_component_level_message_and_context(tmp_path: Path) -> None:
    out = io.StringIO()
    configure_logging("silver", "INFO", "json", tmp_path / "logs", out)
    log = logging.getLogger("iot_lakehouse.test")
    log.info("batch committed %s", kv(job="silver", batch_id=4, rows_per_s=12.5))
    log.warning(kv(event="delivery_error", error="broker down", topic="iot-sensors"))
    log.debug("not at INFO")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("job failed %s", kv(job="silver"))

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["message"] for e in lines] == ["batch committed", "delivery_error", "job failed"]
    first = lines[0]
    assert first["component"] == "silver" and first["level"] == "INFO"
    assert first["logger"] == "iot_lakehouse.test" and first["timestamp"].endswith("+00:00")
    assert first["context"] == {"job": "silver", "batch_id": 4, "rows_per_s": 12.5}
    assert lines[1]["level"] == "WARNING"
    assert lines[1]["context"] == {"error": "broker down", "topic": "iot-sensors"}
    assert "ValueError: boom" in lines[2]["exception"]
    # The file holds the same lines.
    logged = (tmp_path / "logs" / "silver.log").read_text().splitlines()
    assert [json.loads(line) for line in logged] == lines


def test_default_lines_are_key_value(tmp_path: Path) -> None:
    out = io.StringIO()
    configure_logging("gold", "INFO", "kv", tmp_path, out)
    logging.getLogger("iot_lakehouse.test").info("gold batch %s", kv(batch_id=2, late=0))
    line = out.getvalue().strip()
    assert line.endswith(
        "level=INFO component=gold logger=iot_lakehouse.test gold batch batch_id=2 late=0"
    )
    assert (tmp_path / "gold.log").read_text().strip() == line
