"""The fault suite: bad input through a real broker, watermark safety, lost and damaged
checkpoints, storage that fills up. Each scenario ends with the ledgers of
``reconcile`` balanced (docs/guarantees.md names the promise each test proves)."""

from __future__ import annotations

from pathlib import Path

from iot_lakehouse.pipeline.checkpoints import unreadable_checkpoint_files
from iot_lakehouse.pipeline.jobs import storage_problem


def test_write_failures_are_told_apart() -> None:
    assert storage_problem("java.io.IOException: Read-only file system") == "read-only"
    assert storage_problem("FileSystemException: No space left on device") == "full"
    assert storage_problem("s3a://b/t: getFileStatus on t: AccessDenied") == "not permitted"
    assert storage_problem("Connection refused") is None


def test_checkpoint_files_spark_cannot_parse_are_found(tmp_path: Path) -> None:
    for folder in ("bronze", "alerts/stateful"):
        (tmp_path / folder / "offsets").mkdir(parents=True)
        (tmp_path / folder / "commits").mkdir()
        (tmp_path / folder / "metadata").write_text('{"id":"x"}')
        (tmp_path / folder / "offsets" / "0").write_text(
            'v1\n{"batchWatermarkMs":0}\n{"t":{"0":5}}'
        )
        (tmp_path / folder / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}')
        (tmp_path / folder / "offsets" / ".1.tmp").write_text("half")  # Spark's own temp file
    assert unreadable_checkpoint_files(str(tmp_path / "bronze")) == []
    assert unreadable_checkpoint_files(str(tmp_path / "alerts")) == []
    (tmp_path / "bronze" / "offsets" / "1").write_text('v1\n{"batchWaterm')  # torn
    (tmp_path / "bronze" / "commits" / "1").write_text("")  # empty
    (tmp_path / "alerts" / "stateful" / "metadata").write_text("\0\0\0")
    assert unreadable_checkpoint_files(str(tmp_path / "bronze")) == [
        str(tmp_path / "bronze" / "offsets" / "1"),
        str(tmp_path / "bronze" / "commits" / "1"),
    ]
    assert unreadable_checkpoint_files(str(tmp_path / "alerts")) == [
        str(tmp_path / "alerts" / "stateful" / "metadata")
    ]
    assert unreadable_checkpoint_files(str(tmp_path / "missing")) == []
