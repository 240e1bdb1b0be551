"""Helpers of the silver tests (tests/integration), which the console and quality tests use too."""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession

INGEST = datetime(2026, 1, 5, 8, 0, 30, tzinfo=UTC)
BRONZE_COLUMNS = (
    "raw_value binary, payload string, topic string, partition int, offset long, "
    "ingest_time timestamp"
)
WIDE_OK = (
    b'{"sensor_id":"sensor-00001","timestamp":"2026-01-05T08:00:00Z","temperature":21.5,'
    b'"humidity":40,"pressure":1000.5,"location":"building-A/floor-1","battery":88}'
)
LONG_OK = (
    '{"timestamp":"2026-01-05T08:00:00Z","device_id":"sensor-temp-003","building":"B",'
    '"floor":3,"type":"temperature","value":27.5,"unit":"°C"}'
).encode()


def bronze_df(
    spark: SparkSession,
    payloads: list[bytes | None],
    first_offset: int = 0,
    ingest: datetime = INGEST,
) -> DataFrame:
    def decode(p: bytes | None) -> str | None:
        try:
            return p.decode("utf-8") if p is not None else None
        except UnicodeDecodeError:
            return None

    rows = [(p, decode(p), "t", 0, first_offset + i, ingest) for i, p in enumerate(payloads)]
    return spark.createDataFrame(rows, BRONZE_COLUMNS)


REASON_CASES: list[tuple[bytes | None, str]] = [
    (b'{"sensor_id":"s-1","timestamp":', "MALFORMED_JSON"),
    (b"not json at all", "MALFORMED_JSON"),
    (b"", "MALFORMED_JSON"),
    (None, "MALFORMED_JSON"),
    (b"[1, 2, 3]", "NOT_AN_OBJECT"),
    (b'"just a string"', "NOT_AN_OBJECT"),
    (b"null", "NOT_AN_OBJECT"),
    (b"\xff\xfe\x00\x01 binary", "NOT_UTF8"),
    (b'{"timestamp":"2026-01-05T08:00:00Z","temperature":21}', "MISSING_FIELD"),
    (b'{"sensor_id":"s-1","temperature":21}', "MISSING_FIELD"),
    (b'{"sensor_id":"s-1","timestamp":null,"temperature":21}', "MISSING_FIELD"),
    (b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","location":"x"}', "MISSING_FIELD"),
    (b'{"device_id":"d-1","timestamp":"2026-01-05T08:00:00Z","type":"co2"}', "MISSING_FIELD"),
    (b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":"hot"}', "WRONG_TYPE"),
    (b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":true}', "WRONG_TYPE"),
    (b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":{"c":1}}', "WRONG_TYPE"),
    (b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":999}', "OUT_OF_RANGE"),
    (
        b'{"device_id":"d-1","timestamp":"2026-01-05T08:00:00Z","type":"energy_consumption",'
        b'"value":-1,"unit":"kWh"}',
        "OUT_OF_RANGE",
    ),
    (
        b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":NaN}',
        "NON_FINITE_VALUE",
    ),
    (
        b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":Infinity}',
        "NON_FINITE_VALUE",
    ),
    (
        b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":1e309}',
        "NON_FINITE_VALUE",
    ),
    (b'{"sensor_id":"s-1","timestamp":"2026-01-05T08:00:00Z","temperature":null}', "NULL_VALUE"),
    (
        b'{"device_id":"d-1","timestamp":"2026-01-05T08:00:00Z","type":"co2","value":null}',
        "NULL_VALUE",
    ),
    (
        b'{"sensor_id":"s-1","timestamp":"2026-01-05T09:00:00Z","temperature":20}',
        "FUTURE_TIMESTAMP",
    ),
    (b'{"sensor_id":"s-1","timestamp":"next tuesday","temperature":20}', "UNPARSABLE_TIMESTAMP"),
    (
        b'{"sensor_id":"s-1","timestamp":"2026-13-45T99:00:00Z","temperature":20}',
        "UNPARSABLE_TIMESTAMP",
    ),
    (b'{"sensor_id":"","timestamp":"2026-01-05T08:00:00Z","temperature":20}', "INVALID_SENSOR_ID"),
    (
        b'{"sensor_id":"' + b"x" * 65 + b'","timestamp":"2026-01-05T08:00:00Z","temperature":20}',
        "INVALID_SENSOR_ID",
    ),
    (
        b'{"sensor_id":"bad id!","timestamp":"2026-01-05T08:00:00Z","temperature":20}',
        "INVALID_SENSOR_ID",
    ),
    (
        b'{"device_id":"d-1","timestamp":"2026-01-05T08:00:00Z","type":"radiation","value":1}',
        "UNKNOWN_METRIC",
    ),
]
