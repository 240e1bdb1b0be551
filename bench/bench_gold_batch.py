"""What one gold micro-batch costs, and which JVM or Spark settings change it, side by side.

    uv run python bench/bench_gold_batch.py [--variants base,interpreted,c1,base] [--events 6000]

Builds one silver table of generated readings (the input of the gold five-kill test:
40 sensors, ``--parts`` bronze files, a silver file or more each), then for each variant runs
``iot-lakehouse run gold --available-now`` on a fresh copy of it, one silver file a batch, as
the tests run a job process (``local[1]``, a 1 GiB driver). Per variant it prints the time from
process start to the first batch's trigger, the first batch (cold JVM), the later batches'
mean and the last four's, the megabytes of data files gold's commits wrote per batch (all
batches, the last four: a MERGE writes back every file it touches whole, so this grows with the
table unless the files it touches stay small), the batches and readings per batch (from
``_ops/stream_metrics``), the wall time, the
Spark jobs and Delta commits per batch (from Spark's event log), and the classes Spark's code
generator compiled and the seconds it took (its ``Code generated in`` log lines). Variants
differ only in what ``VARIANTS`` gives them; a variant cannot undo a setting of the project's own
(``spark_session.tuning``: the session's settings win over ``--conf``). The ``baseline``
variant runs the job of another revision (``--baseline REV``, checked out in a git worktree),
for a change of the project's own code side by side.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from iot_lakehouse.runtime.spark_session import build_spark
from iot_lakehouse.runtime.stream_metrics import read_stream_metrics
from iot_lakehouse.settings import PROJECT_ROOT, Settings

sys.path.insert(0, str(PROJECT_ROOT))  # the tests' input builder and job environment
from tests.conftest import job_env


@dataclass(frozen=True)
class Variant:
    """Spark settings (``--conf``) and JVM options a variant adds to the job's driver."""

    spark_conf: dict[str, str] = field(default_factory=dict)
    java_options: str = ""
    about: str = ""
    baseline: bool = False  # run the job of the --baseline revision, not of this tree


VARIANTS = {
    "base": Variant(about="the project's settings"),
    "interpreted": Variant(
        {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"},
        about="no generated code: expressions interpreted",
    ),
    "c1": Variant(java_options="-XX:TieredStopAtLevel=1", about="JIT: the C1 compiler only"),
    "no-merge-materialize": Variant(
        {"spark.databricks.delta.merge.materializeSource": "none"},
        about="MERGE reads its (checkpointed) source without copying it first",
    ),
    "maxfields": Variant(
        {"spark.sql.codegen.maxFields": "1000"},
        about="whole-stage code generation also for plans of many (nested) fields: Delta's log",
    ),
    "baseline": Variant(baseline=True, about="the project's code at --baseline REV"),
    "files-in-crc": Variant(
        {"spark.databricks.delta.allFilesInCrc.enabled": "true"},
        about="Delta keeps the file list of small tables in the .crc file",
    ),
}


def build_input(root: Path, events: int, parts: int, rate: float, sensors: int) -> None:
    """Silver readings of ``events`` generated events (``rate`` a second from ``sensors``
    sensors: ``events / rate`` seconds of event time) in ``parts`` files, under ``root``."""
    from tests.faults.test_gold import KILL_TEST_INPUT
    from tests.support.gold import build_silver, gold_settings

    settings = Settings.from_env({}).with_(
        spark_master="local[2]",
        spark_driver_memory="2g",
        lakehouse_path=str(root / "lakehouse"),
        dlq_path=str(root / "dlq"),
        runtime_dir=root / "runtime",
    )
    spark = build_spark(settings, "bench-gold-batch-input")
    config = replace(KILL_TEST_INPUT, count=events, rate=rate, sensors=sensors)
    build_silver(spark, gold_settings(settings), config, parts=parts)
    spark.stop()


# Spark's own console logging (warnings), plus the code generator's line for each class it
# compiles, to a file of its own.
COMPILE_LOG_CONFIG = """\
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n
appender.compiles.type = File
appender.compiles.name = compiles
appender.compiles.fileName = {path}
appender.compiles.layout.type = PatternLayout
appender.compiles.layout.pattern = %m%n
logger.codegen.name = org.apache.spark.sql.catalyst.expressions.codegen.CodeGenerator
logger.codegen.level = info
logger.codegen.additivity = false
logger.codegen.appenderRef.compiles.ref = compiles
"""


def compile_counts(log: Path) -> tuple[int, float]:
    """(classes compiled, seconds compiling) from the code generator's log lines."""
    times = [float(ms) for ms in re.findall(r"Code generated in ([\d.]+) ms", log.read_text())]
    return len(times), sum(times) / 1000


def event_log_counts(folder: Path) -> tuple[int, int]:
    """(Spark jobs, Delta commits) recorded in the one (rolling) event log under ``folder``."""
    jobs = commits = 0
    for log in sorted(folder.rglob("events_*")):
        for line in log.open():
            event = json.loads(line)
            if event["Event"] == "SparkListenerJobStart":
                jobs += 1
            elif event["Event"].endswith("SparkListenerSQLExecutionStart"):
                plan = event.get("physicalPlanDescription", "")
                top = plan.split("== Physical Plan ==")[-1].strip().split("\n")[0]
                if any(c in top for c in ("MergeIntoCommand", "UpdateCommand", "SaveInto")):
                    commits += 1
    return jobs, commits


def gold_bytes_written(lakehouse: Path, since: datetime | None = None) -> int:
    """Bytes of the data files the commits of every gold table added (a MERGE adds the files
    it rewrote whole), of the commits made at ``since`` or later (all without it)."""
    written = 0
    after_ms = 0 if since is None else since.timestamp() * 1000
    for commit in lakehouse.glob("gold/*/_delta_log/*.json"):
        actions = [json.loads(line) for line in commit.open()]
        info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
        if info["timestamp"] >= after_ms:
            written += sum(a["add"]["size"] for a in actions if "add" in a)
    return written


def baseline_tree(revision: str, root: Path) -> Path:
    """A checkout of ``revision`` of this repository under ``root`` (a git worktree)."""
    tree = root / "baseline"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), revision],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )
    return tree


def run_variant(
    name: str, variant: Variant, source: Path, work: Path, baseline: Path | None
) -> dict[str, float]:
    """One ``run gold --available-now`` on a fresh copy of ``source``; its figures."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    events = work / "event-log"
    events.mkdir()
    conf = {
        **variant.spark_conf,
        "spark.eventLog.enabled": "true",
        "spark.eventLog.compress": "false",
        "spark.eventLog.dir": events.as_uri(),
    }
    settings = Settings.from_env({}).with_(
        lakehouse_path=str(work / "lakehouse"),
        dlq_path=str(work / "dlq"),
        runtime_dir=work / "runtime",
    )
    env = job_env(  # as the tests run a job process: local[1], a 1 GiB driver, no GX
        settings,
        GOLD_MAX_FILES_PER_TRIGGER="1",
        SNAPSHOT_IN_FIRST_BATCH="false",  # one silver file a batch from the first on
        PYSPARK_SUBMIT_ARGS=" ".join(f"--conf {k}={v}" for k, v in conf.items()) + " pyspark-shell",
    )
    if variant.baseline:
        if baseline is None:
            raise SystemExit(f"variant {name} needs --baseline REV")
        env["PYTHONPATH"] = str(baseline / "src")  # ahead of the editable install of this tree
    compiles = work / "compiles.log"
    log_config = work / "log4j2.properties"
    log_config.write_text(COMPILE_LOG_CONFIG.format(path=compiles))
    env["JAVA_TOOL_OPTIONS"] = (
        f"-Dlog4j2.configurationFile={log_config.as_uri()} {variant.java_options}".strip()
    )
    started = datetime.now(UTC)
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "iot_lakehouse", "run", "gold", "--available-now"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.monotonic() - t0
    if run.returncode != 0:
        raise SystemExit(f"variant {name}: the gold job failed:\n{run.stderr[-3000:]}")
    metrics = sorted(
        read_stream_metrics(str(work / "lakehouse/_ops/stream_metrics")),
        key=lambda r: r["batch_id"],
    )
    batches = [r for r in metrics if r["input_rows"]]
    if len(batches) < 2:
        raise SystemExit(f"variant {name}: {len(batches)} gold batches; give it more --parts")
    jobs, commits = event_log_counts(events)
    classes, compile_s = compile_counts(compiles)
    return {
        "to_first_trigger_s": (batches[0]["batch_time"] - started).total_seconds(),
        "first_batch_s": batches[0]["batch_duration_ms"] / 1000,
        "later_batch_s": statistics.mean(r["batch_duration_ms"] for r in batches[1:]) / 1000,
        "last_batches_s": statistics.mean(r["batch_duration_ms"] for r in batches[-4:]) / 1000,
        "written_mb_per_batch": gold_bytes_written(work / "lakehouse") / len(batches) / 1e6,
        "last_written_mb_per_batch": (
            gold_bytes_written(work / "lakehouse", batches[-4]["batch_time"]) / 4 / 1e6
        ),
        "wall_s": wall,
        "batches": len(batches),
        "rows_per_batch": statistics.mean(r["input_rows"] for r in batches),
        "jobs_per_batch": jobs / len(batches),
        "commits_per_batch": commits / len(batches),
        "compiles": classes,
        "compile_s": compile_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--variants", default="base,interpreted,c1,base", help=f"of {list(VARIANTS)}, in order"
    )
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--parts", type=int, default=8, help="bronze files (a silver batch each)")
    parser.add_argument("--rate", type=float, default=10.0, help="events a second of event time")
    parser.add_argument("--sensors", type=int, default=40)
    parser.add_argument(
        "--baseline", metavar="REV", help="git revision the `baseline` variant runs the job of"
    )
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="bench-gold-batch-") as tmp:
        root = Path(tmp)
        hours = args.events / args.rate / 3600
        print(
            f"building silver: {args.events} events ({hours:.1f} h of event time, "
            f"{args.sensors} sensors) in {args.parts} files …",
            flush=True,
        )
        build_input(root / "input", args.events, args.parts, args.rate, args.sensors)
        baseline = baseline_tree(args.baseline, root) if args.baseline else None
        rows = []  # a variant named twice runs twice: the spread of one setting
        try:
            for name in names:
                print(f"variant {name}: {VARIANTS[name].about} …", flush=True)
                figures = run_variant(name, VARIANTS[name], root / "input", root / "run", baseline)
                rows.append((name, figures))
        finally:
            if baseline is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], check=False)
    base = rows[0][1]
    print(
        f"\n{'variant':22} {'to 1st trigger':>14} {'1st batch':>10} {'later batch':>12} "
        f"{'last 4':>7} {'MB written':>11} {'last 4':>8} "
        f"{'wall':>8} {'vs ' + names[0]:>9} {'batches':>8} {'rows/batch':>11} {'jobs/batch':>11} "
        f"{'commits/batch':>14} {'compiles':>9} {'compiling':>10}"
    )
    for name, r in rows:
        print(
            f"{name:22} {r['to_first_trigger_s']:13.1f}s {r['first_batch_s']:9.1f}s "
            f"{r['later_batch_s']:11.1f}s {r['last_batches_s']:6.1f}s "
            f"{r['written_mb_per_batch']:8.2f}/b {r['last_written_mb_per_batch']:6.2f}/b "
            f"{r['wall_s']:7.1f}s {r['wall_s'] / base['wall_s']:8.2f}x "
            f"{r['batches']:8.0f} {r['rows_per_batch']:11.0f} "
            f"{r['jobs_per_batch']:11.1f} {r['commits_per_batch']:14.1f} "
            f"{r['compiles']:9.0f} {r['compile_s']:9.1f}s"
        )


if __name__ == "__main__":
    main()
