"""Bronze's progress read from its checkpoint, and what a clean of the topic would delete."""

from __future__ import annotations

from pathlib import Path

from iot_lakehouse.runtime.kafka_cleanup import BronzeProgress, plan_clean, read_bronze_progress
from iot_lakehouse.settings import Settings
from tests.support.kafka_cleanup import write_bronze_checkpoint


def test_bronze_progress_is_the_offsets_of_the_newest_committed_batch(tmp_path: Path) -> None:
    settings = Settings(lakehouse_path=str(tmp_path), kafka_topic="t")
    checkpoint = settings.checkpoint_path("bronze")
    missing = read_bronze_progress(checkpoint, "t")
    assert (missing.batch_id, missing.offsets) == (None, {})
    assert missing.note is not None and "has not run" in missing.note

    write_bronze_checkpoint(settings, {0: 5, 1: 7}, committed=False, batch=0)
    uncommitted = read_bronze_progress(checkpoint, "t")
    assert uncommitted.offsets == {} and "not committed" in (uncommitted.note or "")

    write_bronze_checkpoint(settings, {0: 5, 1: 7}, batch=0)
    write_bronze_checkpoint(settings, {0: 50, 1: 70}, committed=False, batch=1)  # in flight
    progress = read_bronze_progress(checkpoint, "t")
    assert (progress.batch_id, progress.offsets, progress.note) == (0, {0: 5, 1: 7}, None)
    other_topic = read_bronze_progress(checkpoint, "other")
    assert other_topic.offsets == {} and "no offsets of other" in (other_topic.note or "")
    assert read_bronze_progress("s3a://bucket/_checkpoints/bronze", "t").note is not None


def test_plan_clean_counts_what_bronze_has_not_ingested() -> None:
    marks = {0: (0, 100), 1: (40, 40), 2: (10, 60)}
    plans = plan_clean(marks, BronzeProgress("cp", 3, {0: 100, 2: 30}))
    assert [(p.partition, p.records, p.not_ingested) for p in plans] == [
        (0, 100, 0),
        (1, 0, 0),
        (2, 50, 30),
    ]
    nothing = plan_clean(marks, BronzeProgress("cp", None, {}, "no checkpoint"))
    assert [p.not_ingested for p in nothing] == [100, 0, 50]
    # bronze's checkpoint is ahead of this topic (recreated): its offsets say nothing here
    recreated = plan_clean({0: (0, 300)}, BronzeProgress("cp", 9, {0: 5000}))
    assert [p.not_ingested for p in recreated] == [300]
