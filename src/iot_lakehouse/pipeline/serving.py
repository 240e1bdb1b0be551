"""gold/alerts and silver -> MongoDB: the serving job (``iot-lakehouse run serve``).

Applications read the pipeline's current state from a MongoDB database
(``SERVING_MONGO_DATABASE`` at ``SERVING_MONGO_URI``, by default the local server of
``iot-lakehouse mongo start``):

- ``alerts``: one document per row of gold/alerts, ``_id`` = ``alert_id``, with
  ``is_critical`` (severity ``critical``: the detectors the alert rules mark critical, and any
  static threshold silver's rules give ``severity: critical``) and ``evidence`` as a document.
- ``sensor_latest``: one document per sensor, ``_id`` = ``sensor_id``: its ``location``, the
  newest reading of each metric (``readings.<metric>``: value, unit, event_time and the static
  flag it carries), ``last_event_time``, and ``open_alerts``: per alert type (and metric) the
  newest fired alert, removed when a newer clearing of it arrives; its ``open_until`` is when
  the project stops counting it open (``status``): 15 minutes after detection, or null for
  SENSOR_SILENT, open until it clears.

Two queries, each with its own checkpoint under ``_checkpoints/serve/``: ``alerts`` reads
gold/alerts, ``latest`` reads silver. Every write is an upsert by ``_id`` that keeps the newer
of two values by event time, so a replayed batch, or a query read again from the start,
changes nothing. The writes use pymongo on the driver inside ``foreachBatch``: keeping the
newer value needs a read before the write, which the MongoDB Spark connector's
replace/update writes do not do. A MongoDB that does not answer is retried
(``WRITE_ATTEMPTS`` times); then the batch fails with what to do, the job's restarts follow,
and nothing is lost: the query resumes from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import MongoClient, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery

from iot_lakehouse.errors import JobError
from iot_lakehouse.logs import kv
from iot_lakehouse.pipeline.checkpoints import delta_source_options, delta_table_exists
from iot_lakehouse.pipeline.detectors import CLEARED, FIRED, OPEN_ALERT_WINDOW, SILENT
from iot_lakehouse.pipeline.streaming import start_foreach_batch
from iot_lakehouse.settings import Settings

logger = logging.getLogger(__name__)

JOB_NAME = "serve"
ALERTS, LATEST = "alerts", "latest"  # the job's queries (checkpoints _checkpoints/serve/<part>)
QUERY_PARTS = (ALERTS, LATEST)
ALERTS_COLLECTION, LATEST_COLLECTION = "alerts", "sensor_latest"
CRITICAL = "critical"
WRITE_ATTEMPTS = 3  # tries of one batch's writes before the batch fails
RETRY_PAUSE_S = 2.0
SERVER_TIMEOUT_MS = 5_000
# Documents per bulk write: FerretDB 1.24 (the local server) never answers a bulk write of 100
# or more updates of existing documents.
CHUNK = 50
# A server that accepted a write but does not answer it is a failure to retry, not a wait
# without end.
SOCKET_TIMEOUT_MS = 30_000
ALERTS_TABLE_WAIT_S = 120.0

T = TypeVar("T")
# The two queries of the job both read and upsert sensor_latest documents: one at a time, so
# two upserts of a new sensor's document never race (a duplicate-key failure; FerretDB then
# answers without the counts pymongo reads).
_LATEST_LOCK = threading.Lock()


# --- documents (pure) ---
def alert_document(row: dict[str, Any]) -> dict[str, Any]:
    """The ``alerts`` document of one gold/alerts row."""
    doc = {k: v for k, v in row.items() if k not in ("alert_id", "batch_id", "evidence")}
    doc["_id"] = row["alert_id"]
    doc["is_critical"] = row["severity"] == CRITICAL
    doc["evidence"] = _parsed(row.get("evidence"))
    return {k: _utc(v) for k, v in doc.items()}


def _parsed(evidence: object) -> object:
    if not isinstance(evidence, str):
        return evidence
    try:
        return json.loads(evidence)
    except ValueError:
        return evidence


def _utc(value: object) -> object:
    return _as_utc(value) if isinstance(value, datetime) else value


def alert_key(alert_type: str, metric: str | None) -> str:
    """The ``open_alerts`` field of an alert: its type, and its metric if it has one."""
    return f"{alert_type}:{metric}" if metric else alert_type


def open_until(alert_type: str, detected_at: datetime) -> datetime | None:
    """Until when ``status`` counts a fired alert open: SENSOR_SILENT until it clears (None),
    any other for OPEN_ALERT_WINDOW after its detection."""
    return None if alert_type == SILENT else _as_utc(detected_at) + OPEN_ALERT_WINDOW


def _as_utc(value: datetime) -> datetime:
    """PySpark hands timestamps over as naive datetimes in the process's local time zone:
    made aware, in UTC, as MongoDB stores them."""
    return value.astimezone(UTC)


def _newer(new: datetime, stored: object) -> bool:
    """True if ``new`` is at least as recent as ``stored`` (none stored: True). Equal times
    write again the same value: a replay changes nothing."""
    return not isinstance(stored, datetime) or _as_utc(new) >= _as_utc(stored)


def _field(doc: dict[str, Any] | None, *path: str) -> Any:
    value: Any = doc
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def latest_updates(
    latest: Iterable[dict[str, Any]], stored: dict[str, dict[str, Any]]
) -> list[UpdateOne]:
    """Upserts of ``sensor_latest`` for the newest reading per sensor and metric of a batch
    (``latest``), each only where it is not older than what ``stored`` (by sensor) holds."""
    sets: dict[str, dict[str, Any]] = {}
    for r in latest:
        sensor, metric, at = r["sensor_id"], r["metric"], _as_utc(r["event_time"])
        doc = stored.get(sensor)
        if not _newer(at, _field(doc, "readings", metric, "event_time")):
            continue
        fields = sets.setdefault(sensor, {})
        fields[f"readings.{metric}"] = {
            "value": r["value"],
            "unit": r["unit"],
            "event_time": at,
            "alert_type": r["alert_type"],
            "severity": r["severity"],
        }
        previous = fields.get("last_event_time")
        if (previous is None or at >= previous) and _newer(at, _field(doc, "last_event_time")):
            fields["last_event_time"] = at  # and the location of the sensor's newest reading
            fields["location"] = r["location"]
    return [UpdateOne({"_id": s}, {"$set": f}, upsert=True) for s, f in sets.items()]


def open_alert_updates(
    alerts: Iterable[dict[str, Any]], stored: dict[str, dict[str, Any]]
) -> list[UpdateOne]:
    """``sensor_latest.open_alerts`` changes for a batch's alerts in event-time order: a fired
    alert newer than the stored one of its key opens it; a clearing newer than it removes it."""
    state: dict[str, dict[str, Any]] = {
        s: dict(_field(doc, "open_alerts") or {}) for s, doc in stored.items()
    }
    touched: dict[str, set[str]] = {}
    for a in sorted(alerts, key=lambda a: (a["event_time"], a["status"] == CLEARED)):
        if not a["sensor_id"]:
            continue
        sensor, key, at = a["sensor_id"], alert_key(a["alert_type"], a["metric"]), a["event_time"]
        current = state.setdefault(sensor, {}).get(key)
        if a["status"] == FIRED and _newer(at, _field(current, "event_time")):
            state[sensor][key] = {
                "alert_id": a["alert_id"],
                "alert_type": a["alert_type"],
                "metric": a["metric"],
                "severity": a["severity"],
                "is_critical": a["severity"] == CRITICAL,
                "event_time": _as_utc(at),
                "detected_at": _as_utc(a["detected_at"]),
                "open_until": open_until(a["alert_type"], a["detected_at"]),
            }
            touched.setdefault(sensor, set()).add(key)
        elif a["status"] == CLEARED and current is not None and _newer(at, current["event_time"]):
            del state[sensor][key]
            touched.setdefault(sensor, set()).add(key)
    updates = []
    for sensor, keys in touched.items():
        change: dict[str, dict[str, Any]] = {}
        for key in keys:
            if key in state[sensor]:
                change.setdefault("$set", {})[f"open_alerts.{key}"] = state[sensor][key]
            else:
                change.setdefault("$unset", {})[f"open_alerts.{key}"] = ""
        updates.append(UpdateOne({"_id": sensor}, change, upsert=True))
    return updates


# --- MongoDB ---
def with_retries(settings: Settings, what: str, write: Callable[[], T]) -> T:
    """``write()``, tried WRITE_ATTEMPTS times while MongoDB does not answer; then a JobError
    that says what to do (the batch fails; its query resumes from its checkpoint)."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return write()
        except (ConnectionFailure, OperationFailure) as exc:
            if isinstance(exc, OperationFailure) and not exc.has_error_label("RetryableWriteError"):
                raise JobError(f"serve: MongoDB refused {what}: {exc}") from exc
            if attempt == WRITE_ATTEMPTS:
                raise JobError(
                    f"serve: MongoDB at {settings.serving_uri} did not answer while writing "
                    f"{what} ({WRITE_ATTEMPTS} attempts; {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}). Start it (`iot-lakehouse mongo "
                    "start` for the local one) or fix SERVING_MONGO_URI, then start the job "
                    "again: it resumes from its checkpoint and nothing is lost."
                ) from exc
            logger.warning(
                "MongoDB did not answer, trying again %s",
                kv(job=JOB_NAME, what=what, attempt=attempt, of=WRITE_ATTEMPTS, error=exc),
            )
            time.sleep(RETRY_PAUSE_S * attempt)
    raise AssertionError("unreachable")


def mongo_client(settings: Settings) -> MongoClient[dict[str, Any]]:
    return MongoClient(
        settings.serving_uri,
        serverSelectionTimeoutMS=SERVER_TIMEOUT_MS,
        connectTimeoutMS=SERVER_TIMEOUT_MS,
        socketTimeoutMS=SOCKET_TIMEOUT_MS,
        tz_aware=True,
    )


def _chunks(items: list[T], size: int = CHUNK) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stored_sensors(
    collection: Collection[dict[str, Any]], sensors: list[str], field: str
) -> dict[str, dict[str, Any]]:
    """The ``field`` of the stored ``sensor_latest`` documents of ``sensors``, by sensor."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(sensors))):
        for doc in collection.find({"_id": {"$in": chunk}}, {field: 1}):
            found[doc["_id"]] = doc
    return found


def bulk(
    collection: Collection[dict[str, Any]],
    updates: Sequence[UpdateOne | ReplaceOne[dict[str, Any]]],
) -> int:
    written = 0
    for chunk in _chunks(list(updates)):
        result = collection.bulk_write(chunk, ordered=False)
        written += result.upserted_count + result.modified_count
    return written


# --- the two queries' batches ---
def _rows(df: DataFrame) -> list[dict[str, Any]]:
    return [r.asDict() for r in df.toLocalIterator()]


@dataclass
class ServingWriter:
    """foreachBatch of one serving query: ``ALERTS`` or ``LATEST``."""

    spark: SparkSession
    settings: Settings
    part: str

    def __post_init__(self) -> None:
        self.client = mongo_client(self.settings)
        self.db = self.client[self.settings.serving_mongo_database]

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        if self.part == ALERTS:
            written = self._alerts(batch)
        else:
            written = self._latest(batch)
        logger.info(
            "serving batch written %s",
            kv(
                job=JOB_NAME,
                query=self.part,
                batch_id=batch_id,
                documents=written,
                seconds=round(time.monotonic() - started, 2),
            ),
        )

    def _alerts(self, batch: DataFrame) -> int:
        rows = _rows(batch)
        if not rows:
            return 0
        alerts, latest = self.db[ALERTS_COLLECTION], self.db[LATEST_COLLECTION]
        documents = [alert_document(r) for r in rows]
        upserts = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in documents]
        written = with_retries(self.settings, "alerts", lambda: bulk(alerts, upserts))

        def open_alerts() -> int:
            with _LATEST_LOCK:
                stored = stored_sensors(latest, [r["sensor_id"] for r in rows], "open_alerts")
                return bulk(latest, open_alert_updates(rows, stored))

        return written + with_retries(self.settings, "open alerts", open_alerts)

    def _latest(self, batch: DataFrame) -> int:
        newest = F.max_by(
            F.struct("value", "unit", "event_time", "location", "alert_type", "severity"),
            "event_time",
        )
        per_metric = batch.groupBy("sensor_id", "metric").agg(newest.alias("r"))
        rows = [
            {"sensor_id": r["sensor_id"], "metric": r["metric"], **r["r"].asDict()}
            for r in per_metric.collect()
        ]
        if not rows:
            return 0
        latest = self.db[LATEST_COLLECTION]

        def write() -> int:
            with _LATEST_LOCK:
                stored = stored_sensors(latest, [r["sensor_id"] for r in rows], "readings")
                return bulk(latest, latest_updates(rows, stored))

        return with_retries(self.settings, "latest readings", write)


# --- wiring ---
def check_reachable(settings: Settings) -> None:
    """JobError unless the serving MongoDB answers a ping (before the queries start)."""
    client = mongo_client(settings)
    try:
        with_retries(settings, "a ping", lambda: client.admin.command("ping"))
    except PyMongoError as exc:
        raise JobError(f"serve: MongoDB at {settings.serving_uri}: {exc}") from exc
    finally:
        client.close()


def wait_for_alerts_table(spark: SparkSession, settings: Settings, available_now: bool) -> None:
    """gold/alerts is the alerts job's to create (two creators at once would clash): wait for
    it while that job starts (after silver's first write, as this one), or refuse at once when
    draining with ``--available-now``."""
    deadline = time.monotonic() + (0.0 if available_now else ALERTS_TABLE_WAIT_S)
    while not delta_table_exists(spark, settings.alerts_path):
        if time.monotonic() >= deadline:
            raise JobError(
                f"serve: the alerts table {settings.alerts_path} does not exist yet; the "
                "serving job reads it. Run the alerts job first (`iot-lakehouse run alerts`, "
                "or ./start_all.sh --with-mongo, which runs both)."
            )
        time.sleep(2.0)


def _source(spark: SparkSession, settings: Settings, path: str, part: str) -> DataFrame:
    """``path`` as the stream of query ``part``. ``rerun`` deletes a layer's rows before it
    rebuilds them: such a commit is skipped (``skipChangeCommits``), and the rebuilt rows,
    appended again, are upserted by their ``_id`` again."""
    return (
        spark.readStream.format("delta")
        .option("skipChangeCommits", "true")
        .options(
            **delta_source_options(
                spark,
                settings,
                f"{JOB_NAME}/{part}",
                maxFilesPerTrigger=settings.serving_max_files_per_trigger,
            )
        )
        .load(path)
    )


def start_serving_stream(
    spark: SparkSession, settings: Settings, available_now: bool = False
) -> list[StreamingQuery]:
    """Start the two serving queries (gold/alerts -> ``alerts``, silver -> ``sensor_latest``)."""
    check_reachable(settings)
    wait_for_alerts_table(spark, settings, available_now)
    queries = [
        start_foreach_batch(
            _source(spark, settings, path, part),
            f"{JOB_NAME}_{part}",
            f"{JOB_NAME}/{part}",
            ServingWriter(spark, settings, part),
            settings,
            available_now,
        )
        for part, path in ((ALERTS, settings.alerts_path), (LATEST, settings.silver_readings_path))
    ]
    logger.info(
        "serving streams started %s",
        kv(
            job=JOB_NAME,
            uri=settings.serving_uri,
            database=settings.serving_mongo_database,
            collections=f"{ALERTS_COLLECTION},{LATEST_COLLECTION}",
            available_now=available_now,
        ),
    )
    return queries


def read_collection(settings: Settings, name: str) -> list[dict[str, Any]]:
    """Every document of one serving collection (tests, the notebook)."""
    client = mongo_client(settings)
    try:
        return list(client[settings.serving_mongo_database][name].find())
    finally:
        client.close()
