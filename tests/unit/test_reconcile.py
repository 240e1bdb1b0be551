"""``iot-lakehouse reconcile``: each ledger catches what it promises to, on real Kafka and Delta."""

from __future__ import annotations

import json

from iot_lakehouse.ops.reconcile import (
    Ledger,
    ledgers_json,
)


def test_reconcile_json_names_each_ledger_and_what_is_unexplained() -> None:
    ledgers = [
        Ledger("kafka -> bronze", 10, {"bronze": 10}, 0, 0),
        Ledger("bronze -> silver", 10, {"silver": 7, "dlq": 1}, 2, 1),
    ]
    doc = json.loads(ledgers_json(ledgers))
    assert doc["ok"] is False
    assert [(x["name"], x["parts"], x["unexplained"], x["ok"]) for x in doc["ledgers"]] == [
        ("kafka -> bronze", {"bronze": 10}, 0, True),
        ("bronze -> silver", {"silver": 7, "dlq": 1}, 3, False),
    ]
    assert json.loads(ledgers_json(ledgers[:1]))["ok"] is True
