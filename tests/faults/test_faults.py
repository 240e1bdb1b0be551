"""The fault suite: bad input through a real broker, watermark safety, lost and damaged
checkpoints, storage that fills up. Each scenario ends with the ledgers of
``reconcile`` balanced (docs/guarantees.md names the promise each test proves)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQueryListener

from iot_lakehouse.errors import JobError
from iot_lakehouse.ops.reconcile import reconcile
from iot_lakehouse.pipeline.alerts import start_alerts_stream
from iot_lakehouse.pipeline.bronze import start_bronze_stream
from iot_lakehouse.pipeline.checkpoints import refuse_lost_checkpoint
from iot_lakehouse.pipeline.gold import start_gold_stream
from iot_lakehouse.pipeline.jobs import await_queries
from iot_lakehouse.pipeline.layers import layer_table_paths
from iot_lakehouse.pipeline.silver import start_silver_stream
from iot_lakehouse.runtime.kafka_broker import LocalKafkaBroker
from iot_lakehouse.runtime.kafka_offsets import kafka_watermarks
from iot_lakehouse.settings import PROJECT_ROOT, Settings
from tests.conftest import broker_settings, commits, fill, job_env

SILVER = "silver"


def send_raw(settings: Settings, payloads: list[bytes | None], partition: int = 0) -> None:
    """Send each payload as one Kafka record (None: a null value) to one partition, in order,
    asserting every one was acknowledged."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "message.max.bytes": 1_000_000,
        }
    )
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for payload in payloads:
        producer.produce(settings.kafka_topic, payload, partition=partition, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def run_available_now(spark: SparkSession, settings: Settings, *jobs: str) -> None:
    """Run each job's queries in this process with ``--available-now``, in order."""
    starters = {
        "bronze": start_bronze_stream,
        "silver": start_silver_stream,
        "gold": start_gold_stream,
        "alerts": start_alerts_stream,
    }
    for job in jobs:
        started = starters[job](spark, settings, True)
        await_queries(job, started if isinstance(started, list) else [started], threading.Event())


def ledgers_balance(spark: SparkSession, settings: Settings) -> None:
    ledgers = reconcile(spark, settings)
    assert ledgers and all(ledger.ok for ledger in ledgers), ledgers


# --- 3 and 5: a corpus of bad input and schema drift, through the real broker ----------------
def corpus(now: datetime) -> list[tuple[str, bytes | None, dict[str | None, str]]]:
    """(case, payload, expected outcome per metric): "silver" or the DLQ reason code; the
    metric None stands for a record that gives no reading."""
    t = iso(now - timedelta(seconds=60))

    def wide(sensor: str = "s-fault", timestamp: object = t, **fields: object) -> bytes:
        return json.dumps({"sensor_id": sensor, "timestamp": timestamp, **fields}).encode()

    def raw(reading: str, sensor: str = "s-raw") -> bytes:
        return f'{{"sensor_id":"{sensor}","timestamp":"{t}",{reading}}}'.encode()

    def long(**fields: object) -> bytes:
        return json.dumps(
            {"timestamp": t, "device_id": "dev-9", "building": "C", **fields}
        ).encode()

    nested: object = 1.0
    for _ in range(200):
        nested = {"n": nested}
    epoch = (now - timedelta(seconds=60)).timestamp()
    india = (now - timedelta(seconds=60)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    return [
        ("truncated", wide(temperature=21.5)[:-7], {None: "MALFORMED_JSON"}),
        ("empty", b"", {None: "MALFORMED_JSON"}),
        ("null value (tombstone)", None, {None: "MALFORMED_JSON"}),
        ("whitespace only", b"  \n\t ", {None: "MALFORMED_JSON"}),
        (
            "binary",
            bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x00, 0xFF, 0xFE]),
            {None: "NOT_UTF8"},
        ),
        (
            "latin-1 text",
            f'{{"sensor_id":"café","timestamp":"{t}","temperature":2}}'.encode("latin-1"),
            {None: "NOT_UTF8"},
        ),
        ("deeply nested value", wide(temperature=nested), {"temperature": "WRONG_TYPE"}),
        ("deeply nested document", b"[" * 5000 + b"]" * 5000, {None: "MALFORMED_JSON"}),
        (
            "near max.message.bytes",
            wide(temperature=20.5, blob="x" * 900_000),
            {"temperature": SILVER},
        ),
        ("text for a number", wide(temperature="hot"), {"temperature": "WRONG_TYPE"}),
        ("boolean for a number", wide(humidity=True), {"humidity": "WRONG_TYPE"}),
        ("array for a number", wide(pressure=[1000, 1001]), {"pressure": "WRONG_TYPE"}),
        ("numeric string", wide(pressure="1013.25"), {"pressure": SILVER}),
        ("NaN", raw('"temperature":NaN'), {"temperature": "NON_FINITE_VALUE"}),
        ("-Infinity", raw('"temperature":-Infinity'), {"temperature": "NON_FINITE_VALUE"}),
        ("1e309", raw('"temperature":1e309'), {"temperature": "NON_FINITE_VALUE"}),
        ("out of range", wide(humidity=140), {"humidity": "OUT_OF_RANGE"}),
        ("null reading", wide(temperature=None), {"temperature": "NULL_VALUE"}),
        ("null sensor id", wide(sensor=None, temperature=20), {"temperature": "MISSING_FIELD"}),  # type: ignore[arg-type]
        (
            "missing timestamp",
            json.dumps({"sensor_id": "s", "temperature": 20}).encode(),
            {"temperature": "MISSING_FIELD"},
        ),
        ("no reading at all", wide(location="lab"), {None: "MISSING_FIELD"}),
        (
            "extra fields",
            wide(sensor="s-extra", temperature=20, lat=52.1, lon=4.3, battery=88, firmware="2.1"),
            {"temperature": SILVER},
        ),
        (
            "duplicate keys, first value kept",
            raw('"temperature":10,"temperature":20', sensor="s-dupkey"),
            {"temperature": SILVER},
        ),
        (
            "unicode sensor id",
            wide(sensor="capteur-é-東京-3", temperature=19),
            {"temperature": SILVER},
        ),
        (
            "emoji sensor id",
            wide(sensor="sensor-\U0001f525", temperature=19),
            {"temperature": "INVALID_SENSOR_ID"},
        ),
        (
            "sensor id of 65 characters",
            wide(sensor="s" * 65, temperature=19),
            {"temperature": "INVALID_SENSOR_ID"},
        ),
        (
            "other time zone",
            wide(sensor="s-tz", timestamp=india.isoformat(), temperature=18),
            {"temperature": SILVER},
        ),
        (
            "epoch seconds",
            wide(sensor="s-epoch-s", timestamp=int(epoch), temperature=18),
            {"temperature": SILVER},
        ),
        (
            "epoch milliseconds",
            wide(sensor="s-epoch-ms", timestamp=int(epoch * 1000), temperature=18),
            {"temperature": SILVER},
        ),
        (
            "words for a time",
            wide(timestamp="yesterday", temperature=18),
            {"temperature": "UNPARSABLE_TIMESTAMP"},
        ),
        (
            "US date",
            wide(timestamp="12/01/2026 08:00", temperature=18),
            {"temperature": "UNPARSABLE_TIMESTAMP"},
        ),
        (
            "epoch beyond any date",
            wide(timestamp=1e20, temperature=18),
            {"temperature": "UNPARSABLE_TIMESTAMP"},
        ),
        (
            "time as an object",
            wide(timestamp={"s": 1}, temperature=18),
            {"temperature": "UNPARSABLE_TIMESTAMP"},
        ),
        (
            "far past",
            wide(sensor="s-1970", timestamp="1970-01-01T00:00:00Z", temperature=18),
            {"temperature": SILVER},
        ),
        (
            "far future",
            wide(timestamp="2999-01-01T00:00:00Z", temperature=18),
            {"temperature": "FUTURE_TIMESTAMP"},
        ),
        (
            "a day ahead, epoch ms",
            wide(timestamp=int((epoch + 86_400) * 1000), temperature=18),
            {"temperature": "FUTURE_TIMESTAMP"},
        ),
        ("JSON array", b"[1,2,3]", {None: "NOT_AN_OBJECT"}),
        ("JSON string", b'"hello"', {None: "NOT_AN_OBJECT"}),
        ("JSON number", b"42", {None: "NOT_AN_OBJECT"}),
        ("JSON null", b"null", {None: "NOT_AN_OBJECT"}),
        (
            "long, unknown type",
            long(type="radiation", value=3, unit="mSv"),
            {"radiation": "UNKNOWN_METRIC"},
        ),
        ("long, no value", long(type="co2", unit="ppm"), {"co2": "MISSING_FIELD"}),
        ("long, valid", long(type="co2", value=650, unit="ppm", floor=2), {"co2": SILVER}),
        ("drift: number for the id", wide(sensor=12345, temperature=21), {"temperature": SILVER}),  # type: ignore[arg-type]
        (
            "drift: new metric field",
            wide(sensor="s-new", temperature=21, noise_db=40),
            {"temperature": SILVER},
        ),
    ]


def test_bad_input_through_kafka_lands_in_silver_or_the_dlq_with_its_reason(
    spark: SparkSession, settings: Settings
) -> None:
    now = datetime.now(UTC)
    cases = corpus(now)
    send_raw(settings, [payload for _, payload, _ in cases])
    run_available_now(spark, settings, "bronze", "silver")  # an exception would fail here

    bronze = spark.read.format("delta").load(settings.bronze_events_path)
    assert bronze.count() == len(cases)  # nothing dropped on the way in
    big = next(i for i, (name, _, _) in enumerate(cases) if name == "near max.message.bytes")
    stored = bronze.where(F.col("offset") == big).select(F.length("raw_value")).first()
    assert stored is not None and stored[0] == len(cases[big][1] or b"")

    got: dict[int, dict[str | None, str]] = {i: {} for i in range(len(cases))}
    silver = spark.read.format("delta").load(settings.silver_readings_path)
    for row in silver.select("bronze_offset", "metric").collect():
        got[row.bronze_offset][row.metric] = SILVER
    dlq = spark.read.format("delta").load(settings.dlq_rejects_path)
    for row in dlq.select("bronze_offset", "metric", "reasons", "detail").collect():
        assert row.detail, row  # every reject says why in words too
        expected = cases[row.bronze_offset][2].get(row.metric)
        # the expected reason if it is among them, else all of them (to show the difference)
        got[row.bronze_offset][row.metric] = (
            expected if expected in row.reasons else ",".join(row.reasons)
        )
    mismatches = {
        name: (expected, got[i])
        for i, (name, _, expected) in enumerate(cases)
        if got[i] != expected
    }
    assert mismatches == {}

    dupkey = silver.where(F.col("sensor_id") == "s-dupkey").select("value").collect()
    assert [r.value for r in dupkey] == [10.0]  # as docs/guarantees.md says
    shifted = silver.where(F.col("sensor_id") == "s-tz").select("event_time").first()
    assert shifted is not None
    assert shifted.event_time == (now - timedelta(seconds=60)).replace(tzinfo=None)
    ledgers_balance(spark, settings)


# --- 4: watermark safety ------------------------------------------------------------------------
class DroppedByWatermark(StreamingQueryListener):
    """Counts the rows Spark's stateful operators dropped as behind the watermark."""

    def __init__(self) -> None:
        self.dropped: list[int] = []

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        self.dropped += [op.numRowsDroppedByWatermark for op in event.progress.stateOperators]

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass


@pytest.fixture(scope="module")
def ran_twice(
    spark: SparkSession, kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, list[int]]:
    """Every job run twice with ``--available-now`` on a lakehouse of its own: first a reading
    stamped 280 s ahead among ordinary ones, then readings stamped just before the second
    run. Gold's watermark is two minutes: without the cap at ingest time, the reading ahead
    would move it (and the alerts' 10 s one) past every reading of the second run. Returns
    the settings and the rows the stateful operators dropped in the second run."""
    root = tmp_path_factory.mktemp("ran-twice")
    settings = kafka_settings.with_(
        kafka_topic="sensors-ran-twice",
        kafka_alerts_topic="sensors-ran-twice-alerts",
        lakehouse_path=str(root / "lakehouse"),
        dlq_path=str(root / "dlq"),
        gold_watermark="120 seconds",
    )
    LocalKafkaBroker(settings).create_topics()

    def reading(sensor: str, at: datetime, value: float) -> bytes:
        return json.dumps(
            {"sensor_id": sensor, "timestamp": iso(at), "temperature": value}
        ).encode()

    now = datetime.now(UTC)
    first = [reading("s-ahead", now + timedelta(seconds=280), 21.0)]
    first += [reading("s-early", now - timedelta(seconds=5 - i), 20.0 + 7 * i) for i in range(3)]
    send_raw(settings, first)  # 34 °C: a HIGH_TEMP alert, so gold/alerts has a row
    run_available_now(spark, settings, "bronze", "silver", "gold", "alerts")
    later = datetime.now(UTC) - timedelta(seconds=2)  # after the first ingest: never late
    send_raw(
        settings, [reading("s-later", later + timedelta(milliseconds=i), 22.0) for i in range(4)]
    )
    listener = DroppedByWatermark()
    spark.streams.addListener(listener)
    try:
        run_available_now(spark, settings, "bronze", "silver", "gold", "alerts")
        time.sleep(2)  # progress events reach Python listeners asynchronously
    finally:
        spark.streams.removeListener(listener)
    return settings, listener.dropped


def test_a_reading_stamped_minutes_ahead_does_not_make_valid_readings_late(
    spark: SparkSession, ran_twice: tuple[Settings, list[int]]
) -> None:
    settings, dropped = ran_twice
    late = spark.read.format("delta").load(settings.gold_late_readings_path)
    assert late.count() == 0, late.select("sensor_id", "event_time", "watermark").collect()
    gold = spark.read.format("delta").load(settings.gold_path("sensor_metrics_5m"))
    counts = {
        r.sensor_id: r.total
        for r in gold.groupBy("sensor_id").agg(F.sum("count").alias("total")).collect()
    }
    assert counts == {"s-ahead": 1, "s-early": 3, "s-later": 4}
    # the stateful detectors saw every reading of the second run too
    assert dropped and sum(dropped) == 0, dropped
    ledgers_balance(spark, settings)


# --- 6: checkpoints lost or damaged ----------------------------------------------------------
def bronze_offsets(spark: SparkSession, settings: Settings) -> list[tuple[int, int]]:
    rows = (
        spark.read.format("delta").load(settings.bronze_events_path).select("partition", "offset")
    )
    return sorted((r.partition, r.offset) for r in rows.collect())


def kafka_offsets(settings: Settings) -> list[tuple[int, int]]:
    marks = kafka_watermarks(settings)
    assert marks is not None
    return sorted((p, o) for p, (low, high) in marks.items() for o in range(low, high))


def numbered(prefix: str, count: int) -> list[bytes]:
    at = iso(datetime.now(UTC) - timedelta(seconds=30))
    return [
        json.dumps(
            {"sensor_id": f"{prefix}-{i % 7}", "timestamp": at, "temperature": i % 30}
        ).encode()
        for i in range(count)
    ]


def test_bronze_without_its_checkpoint_resumes_after_the_offsets_in_its_table(
    spark: SparkSession, settings: Settings
) -> None:
    for partition in (0, 1):
        send_raw(settings, numbered(f"p{partition}", 40), partition)
    run_available_now(spark, settings, "bronze", "silver")
    shutil.rmtree(settings.checkpoint_path("bronze"))  # lost
    for partition in (0, 1, 2):  # partition 2 is new to bronze: read from its start
        send_raw(settings, numbered(f"q{partition}", 25), partition)
    run_available_now(spark, settings, "bronze", "silver")
    assert bronze_offsets(spark, settings) == kafka_offsets(settings)  # each exactly once
    ledgers_balance(spark, settings)


def test_a_derived_job_without_its_checkpoint_refuses_to_write_its_rows_twice(
    spark: SparkSession, ran_twice: tuple[Settings, list[int]]
) -> None:
    settings, _ = ran_twice  # every table holds rows
    for job in ("silver", "gold", "alerts"):
        tables = layer_table_paths(job, settings)
        refuse_lost_checkpoint(spark, settings, job, tables)  # the checkpoint is there: no error
        kept = Path(settings.checkpoint_path(job))
        aside = kept.with_name(f"{job}-aside")
        kept.rename(aside)
        with pytest.raises(JobError, match=rf"no checkpoint.*rerun {job} --cascade"):
            refuse_lost_checkpoint(spark, settings, job, tables)
        aside.rename(kept)
    # a fresh lakehouse (tables empty or absent) needs no checkpoint
    fresh = settings.with_(lakehouse_path=settings.lakehouse_path + "-fresh")
    for job in ("silver", "gold", "alerts"):
        refuse_lost_checkpoint(spark, fresh, job, layer_table_paths(job, fresh))


def run_job_process(
    settings: Settings, job: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", "run", job, *args],
        env=job_env(settings),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_job_process_whose_checkpoint_is_lost_in_whole_or_in_part_exits_2(
    spark: SparkSession, ran_twice: tuple[Settings, list[int]]
) -> None:
    settings, _ = ran_twice  # every table holds rows
    lost = [("silver", "silver"), ("alerts", "alerts/stateful"), ("alerts", "alerts/counts")]
    for job, checkpoint in lost:
        kept = Path(settings.checkpoint_path(checkpoint))
        aside = kept.with_name(f"{kept.name}-aside")
        kept.rename(aside)
        try:
            result = run_job_process(settings, job, "--available-now")
        finally:
            aside.rename(kept)
        assert result.returncode == 2, (checkpoint, result.stderr[-3000:])
        assert f"no checkpoint at {kept}" in result.stderr, result.stderr[-3000:]
        assert f"rerun {job} --cascade" in result.stderr
    tables = layer_table_paths("alerts", settings)
    for part in ("static", "stateful", "counts"):  # each query of alerts is guarded on its own
        kept = Path(settings.checkpoint_path(f"alerts/{part}"))
        kept.rename(kept.with_name(f"{part}-aside"))
        try:
            with pytest.raises(JobError, match=rf"no checkpoint at {kept}\b"):
                refuse_lost_checkpoint(spark, settings, "alerts", tables)
        finally:
            kept.with_name(f"{part}-aside").rename(kept)


def test_a_damaged_checkpoint_stops_the_job_with_what_to_do_and_moving_it_aside_resumes(
    spark: SparkSession, settings: Settings
) -> None:
    send_raw(settings, numbered("c", 50))
    run_available_now(spark, settings, "bronze")
    offsets = Path(settings.checkpoint_path("bronze")) / "offsets"
    newest = max(offsets.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    newest.write_text("v1\n{not json")  # a torn write
    send_raw(settings, numbered("c2", 20))

    started = time.monotonic()
    result = run_job_process(settings, "bronze", "--available-now")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "looks damaged" in result.stderr and str(newest) in result.stderr, result.stderr[-3000:]
    assert "Move it aside" in result.stderr
    assert time.monotonic() - started < 120  # no retries of what cannot succeed
    rows_before = len(bronze_offsets(spark, settings))
    assert rows_before == 50  # nothing written from a checkpoint it could not read

    Path(settings.checkpoint_path("bronze")).rename(settings.checkpoint_path("bronze-damaged"))
    run_available_now(spark, settings, "bronze")
    assert bronze_offsets(spark, settings) == kafka_offsets(settings)


# --- 7: storage that becomes full or read-only --------------------------------------------------
def test_a_full_disk_stops_the_job_clearly_and_a_restart_after_the_fix_loses_nothing(
    spark: SparkSession, settings: Settings, small_disk: Path
) -> None:
    settings = settings.with_(
        lakehouse_path=str(small_disk / "lakehouse"), dlq_path=str(small_disk / "dlq")
    )
    send_raw(settings, numbered("r", 100))
    log = small_disk.parent / "bronze.err"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iot_lakehouse", "run", "bronze"],
            env=job_env(settings, JOB_RESTARTS="1"),  # one retry, then the clear exit
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 240
        while commits(settings.bronze_events_path) < 2:  # created, then its first batch
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "bronze wrote nothing in 240 s"
            time.sleep(0.5)
        filler = fill(small_disk)
        send_raw(settings, numbered("r2", 100))
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = log.read_text()
    assert proc.returncode == 2, stderr[-3000:]
    assert "not writable" in stderr and str(small_disk) in stderr, stderr[-3000:]

    assert "full" in stderr, stderr[-3000:]

    filler.unlink()  # the fix
    result = run_job_process(settings, "bronze", "--available-now")
    assert result.returncode == 0, result.stderr[-3000:]
    assert bronze_offsets(spark, settings) == kafka_offsets(settings)


# --- 2: the broker crashes under load -----------------------------------------------------------
def test_a_broker_killed_under_load_loses_no_acknowledged_record_and_bronze_recovers(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = broker_settings(tmp_path / "runtime").with_(
        kafka_topic="sensors-crash",
        lakehouse_path=str(tmp_path / "lakehouse"),
        dlq_path=str(tmp_path / "dlq"),
    )
    broker = LocalKafkaBroker(settings)
    broker.start()
    env = job_env(settings, GENERATOR_API_PORT="0", LOG_FORMAT="json")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "iot_lakehouse", *args],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        return proc

    try:
        broker.create_topics()
        generator = start("generate", "generate", "--rate", "400", "--count", "16000")
        bronze = start("bronze", "run", "bronze")
        deadline = time.monotonic() + 240
        while commits(settings.bronze_events_path) < 3:  # created, then some batches in
            assert bronze.poll() is None, (logs / "bronze.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "bronze committed nothing in 240 s"
            time.sleep(0.5)
        broker.kill()  # SIGKILL, mid-stream, with the producer sending
        time.sleep(5)
        broker.start()  # the same data folder
        assert generator.wait(timeout=300) == 0, (logs / "generate.log").read_text()[-3000:]
        done = [
            json.loads(line)["context"]
            for line in (logs / "generate.log").read_text().splitlines()
            if '"generator_done"' in line
        ]
        assert done and done[-1]["failed"] == 0 and done[-1]["delivered"] == 16000, done
        # bronze recovered by itself (its Kafka reader retries, the job restarts its query),
        # or it exited with a clear error; either way a restart ends with every record once.
        deadline = time.monotonic() + 240
        while bronze.poll() is None and time.monotonic() < deadline:
            if len(bronze_offsets(spark, settings)) >= 16000:
                break
            time.sleep(2)
        if bronze.poll() is None:
            bronze.send_signal(signal.SIGTERM)
            assert bronze.wait(timeout=120) == 0
        else:
            assert "start it again" in (logs / "bronze.log").read_text()
        again = start("bronze-again", "run", "bronze", "--available-now")
        assert again.wait(timeout=300) == 0, (logs / "bronze-again.log").read_text()[-3000:]
        assert bronze_offsets(spark, settings) == kafka_offsets(settings)
        assert len(kafka_offsets(settings)) >= 16000  # every acknowledged record, once each
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        broker.stop()
