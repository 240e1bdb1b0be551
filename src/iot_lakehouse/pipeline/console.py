"""``run silver|gold|alerts --console``: each committed batch also printed to the terminal,
the way Spark's console sink prints one (a header, then the first rows as a table, values
cut at 20 characters). It only reads what the batch wrote; what is written does not change."""

from __future__ import annotations

import threading

from pyspark.sql import DataFrame

RULE = "-" * 43
_PRINTING = threading.Lock()  # the jobs of one driver print whole batches, one at a time


def echo_batch(df: DataFrame, what: str, batch_id: int, rows: int) -> None:
    """Print ``df`` (what batch ``batch_id`` committed to ``what``), its first ``rows`` rows;
    nothing when ``rows`` is 0."""
    if rows <= 0:
        return
    with _PRINTING:
        print(f"{RULE}\nBatch: {batch_id} ({what})\n{RULE}", flush=True)
        df.show(rows, truncate=True)
