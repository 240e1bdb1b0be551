"""The rule file: loading, validation errors, and the good/bad split."""

from __future__ import annotations

from pathlib import Path

import pytest

from iot_lakehouse.errors import ConfigError
from iot_lakehouse.pipeline.rules import load_rules


def test_packaged_rules_load_with_expanded_checks() -> None:
    rules = load_rules()
    by_code = {r.code: r for r in rules.rules}
    assert rules.version and rules.max_future_seconds == 300
    assert len(by_code["OUT_OF_RANGE"].checks) == len(rules.metrics)
    assert by_code["FUTURE_TIMESTAMP"].checks[0].max_value == 300.0
    assert load_rules(max_future_seconds=60).rules[6].checks[0].max_value == 60.0
    assert rules.warn_codes == ("UNIT_CONVERTED",)
    assert rules.metrics["temperature"].known_units[:2] == ("°C", "°F")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just text", "needs 'version' and 'rules'"),
        (
            "version: 1\nrules:\n  - {code: X, criticality: fatal, check: not_null, column: a}",
            "criticality",
        ),
        (
            "version: 1\nrules:\n  - {code: X, criticality: error, check: looks_ok, column: a}",
            "is not one of",
        ),
        (
            "version: 1\nrules:\n  - {code: X, criticality: error, check: between, column: a, "
            "max_value: lots}",
            "not a number",
        ),
        ("version: 1\nrules:\n  - {code: X, criticality: error, check: not_null}", "'column'"),
    ],
)
def test_bad_rule_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_rules(path)
