"""Helpers the stream_metrics tests of tests/integration and tests/unit share."""

from __future__ import annotations

# The shape of StreamingQueryProgress.json for a Kafka source (bronze) and a Delta source with
# a state store (as Spark 4.2 reports them: source metrics are strings).
KAFKA_PROGRESS = {
    "id": "6c1e…-query",
    "runId": "run-1",
    "name": "bronze",
    "timestamp": "2026-11-22T10:00:05.120Z",
    "batchId": 7,
    "numInputRows": 1500,
    "inputRowsPerSecond": 300.0,
    "processedRowsPerSecond": 750.5,
    "durationMs": {"addBatch": 1800, "triggerExecution": 1999},
    "eventTime": {},
    "stateOperators": [],
    "sources": [
        {
            "description": "KafkaV2[Subscribe[iot-sensors]]",
            "numInputRows": 1500,
            "metrics": {
                "avgOffsetsBehindLatest": "120.5",
                "maxOffsetsBehindLatest": "300",
                "minOffsetsBehindLatest": "0",
            },
        }
    ],
    "sink": {"description": "ForeachBatchSink"},
}
STATEFUL_PROGRESS = {
    "id": "q-alerts",
    "runId": "run-2",
    "name": "alerts_stateful",
    "timestamp": "2026-11-22T10:00:06Z",
    "batchId": 3,
    "numInputRows": 40,
    "inputRowsPerSecond": 8.0,
    "processedRowsPerSecond": 20.0,
    "durationMs": {"triggerExecution": 2000},
    "eventTime": {"watermark": "2026-11-22T09:59:50.000Z"},
    "stateOperators": [
        {"numRowsTotal": 12, "numRowsDroppedByWatermark": 2},
        {"numRowsTotal": 5, "numRowsDroppedByWatermark": 1},
    ],
    "sources": [
        {  # as Spark 4.2 reports a Delta source: the offset a JSON string, no metrics
            "description": "DeltaSource[file:/lakehouse/silver/readings]",
            "endOffset": '{"sourceVersion": 1, "reservoirId": "silver-id", "reservoirVersion": 7,'
            ' "index": -1, "isStartingVersion": false}',
            "latestOffset": "null",
            "metrics": {},
        },
        {
            "description": "DeltaSource[…/gold/alerts]",
            "endOffset": {"reservoirId": "alerts-id", "reservoirVersion": 3},
        },
    ],
}
