"""What bronze has read from Kafka (its checkpoint) and deleting the Kafka records below it:
the generator API's ``/clean``, the benchmarks and the tests use it. No web dependencies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from iot_lakehouse.settings import Settings


@dataclass(frozen=True)
class BronzeProgress:
    """How far the bronze job has ingested the topic, from its checkpoint."""

    checkpoint: str
    batch_id: int | None  # newest committed micro-batch; None: none (or unreadable)
    offsets: dict[int, int]  # next offset bronze reads, per partition; absent: nothing yet
    note: str | None = None  # why nothing is known, when nothing is


def _local_path(location: str) -> Path | None:
    if "://" not in location and not location.startswith("file:"):
        return Path(location)
    parsed = urlparse(location)
    return Path(parsed.path) if parsed.scheme == "file" else None


def read_bronze_progress(checkpoint: str, topic: str) -> BronzeProgress:
    """What the bronze checkpoint says is ingested from ``topic``: the offsets file of the
    newest committed batch (``commits/<n>`` → ``offsets/<n>``, a newer uncommitted
    ``offsets/<n+1>`` is in flight, not ingested)."""
    path = _local_path(checkpoint)
    if path is None:
        return BronzeProgress(checkpoint, None, {}, "not a local path: cannot read it from here")
    commits_dir = path / "commits"
    if not path.exists():
        return BronzeProgress(checkpoint, None, {}, "no bronze checkpoint: bronze has not run")
    batches = [int(f.name) for f in commits_dir.glob("*") if f.name.isdigit()]
    if not batches:
        return BronzeProgress(checkpoint, None, {}, "bronze has not committed a batch yet")
    batch = max(batches)
    offsets_file = path / "offsets" / str(batch)
    try:
        # "v1", the batch metadata, then one JSON line per source: {"<topic>": {"0": 123, …}}
        sources = offsets_file.read_text(encoding="utf-8").splitlines()[2:]
        for line in reversed(sources):
            parsed = json.loads(line) if line.strip().startswith("{") else {}
            if topic in parsed:
                offsets = {int(p): int(o) for p, o in parsed[topic].items()}
                return BronzeProgress(checkpoint, batch, offsets)
    except (OSError, ValueError, AttributeError) as exc:
        return BronzeProgress(checkpoint, None, {}, f"cannot read {offsets_file}: {exc}")
    return BronzeProgress(checkpoint, batch, {}, f"batch {batch} has no offsets of {topic}")


@dataclass(frozen=True)
class PartitionPlan:
    """One partition's part of a clean: records [low, high) go."""

    partition: int
    low: int
    high: int
    bronze_offset: int | None  # next offset bronze reads; None: it has read nothing

    @property
    def records(self) -> int:
        return max(0, self.high - self.low)

    @property
    def not_ingested(self) -> int:
        """Records to be deleted that bronze has not ingested. A bronze offset beyond the high
        watermark (the topic was recreated, or the broker's data wiped) says nothing about
        these records: all of them count as not ingested."""
        if self.bronze_offset is None or self.bronze_offset > self.high:
            return self.records
        return max(0, self.high - max(self.low, self.bronze_offset))


def plan_clean(
    watermarks: dict[int, tuple[int, int]], progress: BronzeProgress
) -> list[PartitionPlan]:
    """Per partition: delete everything below the high watermark, and how much of it bronze
    has not ingested yet."""
    return [
        PartitionPlan(p, low, high, progress.offsets.get(p))
        for p, (low, high) in sorted(watermarks.items())
    ]


def delete_records(settings: Settings, topic: str, below: dict[int, int]) -> dict[int, int]:
    """Kafka DeleteRecords: drop the records of ``topic`` below ``below[partition]``; returns
    each partition's new low watermark."""
    if not below:
        return {}
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    futures = admin.delete_records(
        [TopicPartition(topic, p, offset) for p, offset in below.items()],
        request_timeout=30,
        operation_timeout=30,
    )
    return {tp.partition: int(f.result().low_watermark) for tp, f in futures.items()}
