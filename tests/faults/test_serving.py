"""gold/alerts and silver -> MongoDB: the documents, kept newer-wins, against a real
MongoDB-protocol server (FerretDB, started by the project); replays and kills change nothing;
a server that does not answer gives an error that says what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

from pyspark.sql import SparkSession

from iot_lakehouse.pipeline.serving import (
    ALERTS_COLLECTION,
    LATEST_COLLECTION,
)
from iot_lakehouse.settings import Settings
from tests.conftest import checkpoint_commits, kill_repeatedly_then_finish
from tests.support.serving import collections, pipeline_input, run_serve


def test_serve_killed_mid_stream_leaves_the_documents_of_an_uninterrupted_run(
    spark: SparkSession, served: Settings, tmp_path: Path
) -> None:
    pipeline_input(spark, served, parts=10)
    reference = served.with_(
        lakehouse_path=str(tmp_path / "reference"), serving_mongo_database="reference"
    )
    for path in ("silver_readings_path", "alerts_path"):
        shutil.copytree(getattr(served, path), getattr(reference, path))
    env = {
        "SERVING_MONGO_URI": served.serving_uri,
        "SERVING_MAX_FILES_PER_TRIGGER": "1",  # a batch per silver commit, for three kills
        "SNAPSHOT_IN_FIRST_BATCH": "false",
    }
    kill_repeatedly_then_finish(
        "serve", served, lambda: checkpoint_commits(served, "serve"), kills=3, seed=30, **env
    )
    assert checkpoint_commits(served, "serve") >= 10
    run_serve(spark, reference)
    killed, uninterrupted = collections(served), collections(reference)
    assert uninterrupted[ALERTS_COLLECTION] and uninterrupted[LATEST_COLLECTION]
    assert killed == uninterrupted
