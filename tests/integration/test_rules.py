"""The rule file: loading, validation errors, and the good/bad split."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from iot_lakehouse.pipeline.rules import load_rules, split_valid_invalid


def test_split_valid_invalid_keeps_nulls_and_names_reasons(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(
        "version: t1\nrules:\n"
        "  - {code: NEG, criticality: error, check: between, column: v, min_value: 0}\n"
        "  - {code: NO_ID, criticality: error, check: not_null, column: id}\n"
        "  - {code: ODD, criticality: warn, check: in_set, column: id, values: [a]}\n"
    )
    df = spark.createDataFrame(
        [("a", 1.0), ("b", -1.0), (None, None), ("a", None)], "id string, v double"
    )
    valid, rejected = split_valid_invalid(df, load_rules(path))
    assert sorted(((r.id, r.v, list(r.quality_flags)) for r in valid.collect()), key=repr) == [
        ("a", 1.0, []),
        ("a", None, []),
    ]
    assert sorted((str(r.id), list(r.reasons)) for r in rejected.collect()) == [
        ("None", ["NO_ID"]),
        ("b", ["NEG"]),
    ]
    assert valid.count() + rejected.count() == 4
