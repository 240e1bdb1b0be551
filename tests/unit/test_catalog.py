"""Every table is declared once, in the catalog, and everything that names tables agrees."""

from __future__ import annotations

from pyspark.sql.types import StructType

from iot_lakehouse import catalog, schemas
from iot_lakehouse.pipeline.alerts import ALERT_COUNTS_TABLE
from iot_lakehouse.pipeline.gold import WINDOW_TABLES


def test_gold_window_definitions_are_the_catalogs_merged_tables() -> None:
    defined = {f"gold/{t.name}": t.schema for t in (*WINDOW_TABLES, ALERT_COUNTS_TABLE)}
    declared = {t.name: t.schema for t in catalog.TABLES if t.merged}
    assert defined == declared


def test_every_table_schema_is_in_the_catalog() -> None:
    constants = {n: v for n, v in vars(schemas).items() if isinstance(v, StructType)}
    used = [t.schema for t in catalog.TABLES if t.schema is not None]
    missing = [n for n, schema in constants.items() if not any(schema is u for u in used)]
    assert not missing, f"schemas without a catalog table: {missing}"
