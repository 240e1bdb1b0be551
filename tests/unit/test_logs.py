"""Log lines: key=value by default, JSON with LOG_FORMAT=json, to the stream and the file."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from iot_lakehouse.logs import configure_logging, kv, rotate_if_large

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


def test_a_component_log_rotates_at_its_size_keeping_a_few_files(
    tmp_path: Path, restore_logging: None
) -> None:
    configure_logging(
        "bounded", logs_dir=tmp_path, stream=io.StringIO(), max_bytes=2_000, backups=2
    )
    for i in range(400):
        logging.getLogger("test").info("line %s %s", i, "x" * 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bounded.log",
        "bounded.log.1",
        "bounded.log.2",
    ]
    assert all(p.stat().st_size <= 2_100 for p in tmp_path.iterdir())
    assert "line 399 " in (tmp_path / "bounded.log").read_text()


def test_a_file_another_writer_appends_to_is_rotated_in_place(tmp_path: Path) -> None:
    out = tmp_path / "child.out"
    with out.open("ab", buffering=0) as writer:  # the child's stdout, opened for appending
        writer.write(b"old\n" * 100)
        assert rotate_if_large(out, max_bytes=1_000, backups=2) is False  # 400 bytes: kept
        writer.write(b"old\n" * 300)
        assert rotate_if_large(out, max_bytes=1_000, backups=2) is True
        writer.write(b"new\n")  # the writer goes on at the new end, no hole before it
        assert out.read_bytes() == b"new\n"
        assert (tmp_path / "child.out.1").read_bytes() == b"old\n" * 400
        for _ in range(3):
            writer.write(b"more\n" * 300)
            rotate_if_large(out, max_bytes=1_000, backups=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.out", "child.out.1", "child.out.2"]
