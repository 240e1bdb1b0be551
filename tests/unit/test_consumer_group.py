"""Bronze's progress as a Kafka consumer group's committed offsets, read back from the broker."""

from __future__ import annotations

import json

from iot_lakehouse.runtime.consumer_group import kafka_end_offsets


def test_end_offsets_come_from_kafka_sources_only() -> None:
    progress = {
        "sources": [
            {"endOffset": json.dumps({"sensors": {"0": 120, "1": 80}})},
            {"endOffset": {"other": {"2": 5, "x": 3, "3": -1}}},
            {"endOffset": json.dumps({"reservoirId": "t", "reservoirVersion": 4})},  # Delta
            {"endOffset": "not json"},
            {"endOffset": None},
        ]
    }
    assert kafka_end_offsets(progress) == {("sensors", 0): 120, ("sensors", 1): 80, ("other", 2): 5}
    assert kafka_end_offsets({}) == {}
