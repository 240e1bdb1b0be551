"""Tables are created with their properties: no compaction inside batches, statistics where
they pay."""

from __future__ import annotations

from pyspark.sql.types import StructType

from iot_lakehouse import schemas
from iot_lakehouse.schemas import COLUMN_COMMENTS


def test_every_column_of_every_table_has_a_comment() -> None:
    tables = {n: v for n, v in vars(schemas).items() if isinstance(v, StructType) and n.isupper()}
    assert len(tables) >= 10
    missing = {n: [f.name for f in t if f.name not in COLUMN_COMMENTS] for n, t in tables.items()}
    assert not {n: m for n, m in missing.items() if m}, "add them to COLUMN_COMMENTS"
    commented = schemas.with_comments(schemas.GOLD_ALERTS)
    assert [(f.name, f.dataType, f.nullable) for f in commented] == [
        (f.name, f.dataType, f.nullable) for f in schemas.GOLD_ALERTS
    ]
    assert commented["status"].metadata["comment"] == "fired or cleared"
