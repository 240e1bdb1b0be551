"""Helpers the kafka_cleanup tests of tests/integration and tests/unit share."""

from __future__ import annotations

import json
from pathlib import Path

from iot_lakehouse.settings import Settings


def write_bronze_checkpoint(
    settings: Settings, offsets: dict[int, int], committed: bool = True, batch: int = 0
) -> Path:
    """A bronze checkpoint as Spark writes it: ``offsets/<batch>`` (and ``commits/<batch>``)."""
    root = Path(settings.checkpoint_path("bronze"))
    (root / "offsets").mkdir(parents=True, exist_ok=True)
    (root / "commits").mkdir(parents=True, exist_ok=True)
    source = {settings.kafka_topic: {str(p): o for p, o in offsets.items()}}
    meta = {"batchWatermarkMs": 0, "batchTimestampMs": 1767225600000, "conf": {}}
    (root / "offsets" / str(batch)).write_text(f"v1\n{json.dumps(meta)}\n{json.dumps(source)}")
    if committed:
        (root / "commits" / str(batch)).write_text('v1\n{"nextBatchWatermarkMs":0}')
    return root
