"""Starting a layer's streaming query: a named ``foreachBatch`` query with its own checkpoint
and its job's trigger, each batch run with the expression mode its size calls for. Shared by
every layer."""

from __future__ import annotations

import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.streaming.readwriter import DataStreamWriter

from iot_lakehouse.errors import JobError
from iot_lakehouse.runtime.spark_session import expression_mode, use_expression_mode
from iot_lakehouse.runtime.stream_metrics import LATEST_INPUT_ROWS
from iot_lakehouse.settings import Settings


class StageClock:
    """Wall seconds of the steps of one batch, for the batch's log line (``<step>_s=…``)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps[f"{step}_s"] = round(now - self.last, 3)
        self.last = now

    def seconds(self) -> dict[str, float]:
        return dict(self.laps)


def require_columns(df: DataFrame, columns: tuple[str, ...], what: str) -> None:
    """Raise JobError naming the missing columns if ``df`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise JobError(f"{what} lacks columns {missing}; it has {df.columns}")


def with_trigger(
    writer: DataStreamWriter, settings: Settings, available_now: bool, job: str
) -> DataStreamWriter:
    """``availableNow`` (drain what is there, then stop) or ``job``'s processing time
    (with ``SPARK_TUNING=false`` Spark's default: the next batch as soon as one ends)."""
    if available_now:
        return writer.trigger(availableNow=True)
    if not settings.spark_tuning:
        return writer
    return writer.trigger(processingTime=settings.trigger_interval_of(job))


def sized(
    sink: Callable[[DataFrame, int], None],
    driver: SparkSession,
    settings: Settings,
    query_name: str,
) -> Callable[[DataFrame, int], None]:
    """``sink``, run with interpreted expressions while batches are small
    (``INTERPRETED_BELOW_ROWS``, ``spark_session.expression_mode``): on the query's own
    session (the batch's: its parsing, judging, appends) by the query's newest batch, on the
    driver's (MERGEs, table reads), which the jobs of a driver share, by all of theirs."""
    below = settings.interpreted_below_rows if settings.spark_tuning else 0

    def run(batch: DataFrame, batch_id: int) -> None:
        rows = LATEST_INPUT_ROWS.get(query_name)
        own = {} if rows is None else {query_name: rows}
        use_expression_mode([batch.sparkSession], expression_mode(own, below))
        use_expression_mode([driver], expression_mode(LATEST_INPUT_ROWS, below))
        sink(batch, batch_id)

    return run


def start_foreach_batch(
    df: DataFrame,
    query_name: str,
    checkpoint: str,
    sink: Callable[[DataFrame, int], None],
    settings: Settings,
    available_now: bool,
) -> StreamingQuery:
    """Start ``df`` as a named query with its own checkpoint, each micro-batch to ``sink``
    (the trigger interval of the job the query belongs to: ``silver``, ``alerts_counts``, …)."""
    writer = (
        df.writeStream.queryName(query_name)
        .option("checkpointLocation", settings.checkpoint_path(checkpoint))
        .foreachBatch(sized(sink, df.sparkSession, settings, query_name))
    )
    job = query_name.split("_")[0]
    return with_trigger(writer, settings, available_now, job).start()
