"""Helpers the dashboard tests of tests/integration and tests/unit share."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from iot_lakehouse.runtime.stream_metrics import Latency, progress_row


# --- stream_metrics rows, from progress events shaped like Spark 4.2's -------------------------
def progress(
    name: str,
    batch_id: int,
    at: datetime,
    rows_per_s: float,
    sources: list[dict[str, Any]],
    duration_ms: int = 2000,
    watermark: datetime | None = None,
    state_rows: int | None = None,
) -> dict[str, Any]:
    """A ``StreamingQueryProgress.json`` of one finished batch."""
    iso = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rows = int(rows_per_s * 5)
    return {
        "id": f"{name}-query-id",
        "runId": f"{name}-run-id",
        "name": name,
        "timestamp": iso,
        "batchId": batch_id,
        "numInputRows": rows,
        "inputRowsPerSecond": rows_per_s,
        "processedRowsPerSecond": rows_per_s * 2.5,
        "durationMs": {"addBatch": duration_ms - 100, "triggerExecution": duration_ms},
        "eventTime": (
            {"watermark": watermark.isoformat().replace("+00:00", "Z")} if watermark else {}
        ),
        "stateOperators": (
            [{"numRowsTotal": state_rows, "numRowsDroppedByWatermark": 0}] if state_rows else []
        ),
        "sources": [{**source, "numInputRows": rows} for source in sources],
        "sink": {"description": "ForeachBatchSink"},
    }


def kafka_source(lag_max: int) -> dict[str, Any]:
    return {
        "description": "KafkaV2[Subscribe[iot-sensors]]",
        "metrics": {
            "maxOffsetsBehindLatest": str(lag_max),
            "avgOffsetsBehindLatest": str(lag_max / 2),
            "minOffsetsBehindLatest": "0",
        },
    }


UPSTREAM = {"upstream-table-id": 100}  # newest version of the upstream table, by table id


def delta_source(behind: int) -> dict[str, Any]:
    """A Delta source whose batch ended ``behind`` versions before UPSTREAM's newest, in the
    form Spark 4.2 reports it (the offset as a JSON string, no backlog metrics)."""
    end = {"sourceVersion": 1, "reservoirId": "upstream-table-id", "reservoirVersion": 100 - behind}
    return {
        "description": "DeltaSource[file:/lakehouse/silver/readings]",
        "endOffset": json.dumps({**end, "index": -1, "isStartingVersion": False}),
        "latestOffset": "null",
        "metrics": {},
    }


def recorded(row: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The row as the recorder writes it when the batch finished at ``at``."""
    return {**row, "recorded_at": at}


def pipeline_rows(now: datetime) -> list[dict[str, Any]]:
    """A minute of a healthy bronze, silver and gold (a batch every 5 s) and an alerts query
    whose last batch finished 4 minutes ago; oldest first. The newest batches: Kafka lag 611,
    latency Kafka -> silver p50 1,850 ms / p95 4,210 ms, Kafka -> gold 9,800 / 15,200 ms."""
    rows = []
    for i in range(12):
        at = now - timedelta(seconds=5 * (11 - i))
        step = 11 - i  # the newest batch has the round numbers
        bronze = progress("bronze", 40 + i, at, 200.0 + i, [kafka_source(611 + step)])
        silver = progress("silver", 30 + i, at, 398.2, [delta_source(2)], duration_ms=3100)
        gold = progress(
            "gold", 20 + i, at, 30.2, [delta_source(0)], 7000, at - timedelta(minutes=10)
        )
        rows += [
            recorded(progress_row("bronze", bronze), at),
            recorded(
                progress_row(
                    "silver",
                    silver,
                    Latency("kafka_to_silver", 1850.0 + step, 4210.0 + step, 2000),
                    UPSTREAM,
                ),
                at,
            ),
            recorded(
                progress_row(
                    "gold",
                    gold,
                    Latency("kafka_to_gold", 9800.0 + step, 15200.0 + step, 4000),
                    UPSTREAM,
                ),
                at,
            ),
        ]
    stalled_at = now - timedelta(minutes=4)
    alerts = progress(
        "alerts_stateful", 9, stalled_at, 8.0, [delta_source(4)], 2000, stalled_at, 12
    )
    rows.insert(0, recorded(progress_row("alerts", alerts, None, UPSTREAM), stalled_at))
    return sorted(rows, key=lambda r: r["recorded_at"])
