"""Idempotent appends: each batch of a writer lands once, across restarts and older tables."""

from __future__ import annotations

from iot_lakehouse.pipeline.exactly_once import marked_batch, write_mark

APP = "iot-lakehouse-test:0b6f3f7e-query"


def test_a_mark_names_its_writer_and_batch_and_nothing_else_reads_as_one() -> None:
    mark = write_mark(APP, 7)
    assert marked_batch(mark, APP) == 7
    assert marked_batch(mark, "another:query") is None
    assert marked_batch(None, APP) is None
    assert marked_batch("a note someone left on a commit", APP) is None
    assert marked_batch('{"iot_lakehouse_writer": "x"', APP) is None  # broken JSON
    assert marked_batch(write_mark(APP, 7).replace("7", '"7"'), APP) is None  # not a batch id
