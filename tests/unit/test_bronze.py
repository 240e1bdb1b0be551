"""Kafka -> bronze, on the real local broker and real Delta tables."""

from __future__ import annotations

import pytest

from iot_lakehouse.errors import JobError
from iot_lakehouse.pipeline.jobs import job_starter


def test_only_bronze_takes_a_source() -> None:
    assert job_starter("bronze", "files") is not job_starter("bronze", "kafka")
    with pytest.raises(JobError, match="--source files applies to the bronze job only"):
        job_starter("silver", "files")
    with pytest.raises(JobError, match="unknown job 'platinum'"):
        job_starter("platinum", "kafka")
