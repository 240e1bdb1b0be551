"""A long run of ``./start_all.sh`` with faults, as a user leaves it running for days.

    uv run python bench/long_run.py [--minutes 120] [--kill-at 30] [--broker-restart-at 60]
                                    [--kill-python-workers-at 63] [--sample-minutes 5]
                                    [--out long_run.jsonl]

Run it in a clone of its own (it uses that clone's lakehouse, logs and broker). It starts
``./start_all.sh --duration`` at the default rate, and while it runs:

- at ``--kill-at`` minutes, SIGKILLs the Python driver that runs the jobs (the ``jobs`` child of
  ``all``; its JVM goes with it), which ``all`` must start again;
- at ``--broker-restart-at`` minutes, stops the broker (``iot-lakehouse kafka stop``), waits
  30 s and starts it again; the generator and the jobs must ride it out;
- at ``--kill-python-workers-at`` minutes, SIGKILLs the jobs driver's Python workers (Spark's
  ``pyspark.daemon`` and its workers): the job whose task was in one fails and must be
  started again alone while the others go on;
- every ``--sample-minutes``, records the size of the logs folder, of each ``_ops`` table (files
  and bytes), of the lakehouse and each of its top folders, every process' restarts as ``all``
  counts them, and ``status --json``.

At the end it lets the jobs catch up (``run bronze silver gold alerts --available-now``), runs
``reconcile --json`` and prints one summary line per measure; the samples go to ``--out``.
Exit status 0 when the jobs stayed up or were restarted and reconcile balances.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = ["uv", "run", "--frozen", "iot-lakehouse"]


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def folder_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = size = 0
    for item in path.rglob("*"):
        if item.is_file():
            files += 1
            size += item.stat().st_size
    return files, size


def jobs_driver_pid(runtime: Path) -> int | None:
    """The pid of ``all``'s ``jobs`` child, from the pid records stop_all.sh reads."""
    for record in (runtime / "pids").glob("*.pid"):
        pid = int(record.stem)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"iot_lakehouse\x00run\x00bronze" in cmdline:
            return pid
    return None


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def python_workers(driver_pid: int | None) -> list[int]:
    """Pids of the ``pyspark.daemon`` processes (Spark's Python workers) descending from the
    jobs driver: its JVM's daemon and the daemon's workers."""
    if driver_pid is None:
        return []
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"pyspark.daemon" not in (proc / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        ancestor: int | None = int(proc.name)
        while ancestor not in (None, 0, 1, driver_pid):
            ancestor = parent_of(ancestor)
        if ancestor == driver_pid:
            found.append(int(proc.name))
    return sorted(found)


def sample(elapsed_min: float, out: Path, log: Path) -> dict[str, Any]:
    lakehouse = ROOT / "lakehouse"
    ops = {
        table.name: folder_size(table)
        for table in sorted((lakehouse / "_ops").glob("*"))
        if table.is_dir()
    }
    layers = {
        layer.name: folder_size(layer)[1] for layer in sorted(lakehouse.glob("*")) if layer.is_dir()
    }
    top_files = sum(f.stat().st_size for f in lakehouse.glob("*") if f.is_file())
    logs = folder_size(ROOT / ".runtime" / "logs")
    broker_home = ROOT / ".runtime" / "kafka"
    broker_log = [f for f in broker_home.glob("broker.log*") if f.is_file()]
    kafka_logs = (len(broker_log), sum(f.stat().st_size for f in broker_log))
    status = cli("status", "--json", timeout=120)
    try:
        status_json = json.loads(status.stdout)
    except json.JSONDecodeError:
        status_json = {"error": status.stderr[-300:]}
    last_line = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    row = {
        "minute": round(elapsed_min, 1),
        "logs_files_bytes": logs,
        "broker_logs_files_bytes": kafka_logs,
        "ops_files_bytes": ops,
        "lakehouse_bytes": sum(layers.values()) + top_files,
        "layer_bytes": layers,
        "broker_home_bytes": folder_size(broker_home)[1],
        "all_line": last_line[0] if last_line else "",
        "counts": status_json.get("counts"),
    }
    with out.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(
        json.dumps(
            {k: row[k] for k in ("minute", "logs_files_bytes", "lakehouse_bytes", "layer_bytes")}
        )
    )
    print("   ", row["all_line"][:400], flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=120)
    parser.add_argument("--kill-at", type=float, default=30)
    parser.add_argument("--broker-restart-at", type=float, default=60)
    parser.add_argument("--kill-python-workers-at", type=float, default=63)
    parser.add_argument("--sample-minutes", type=float, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "long_run.jsonl")
    args = parser.parse_args()
    log = ROOT / "long_run_all.out"
    args.out.unlink(missing_ok=True)
    started = time.monotonic()
    with log.open("w") as handle:
        run_all = subprocess.Popen(
            ["./start_all.sh", "--duration", str(int(args.minutes * 60))],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    killed = restarted = workers_killed = False
    next_sample = args.sample_minutes
    events: list[str] = []
    while run_all.poll() is None:
        time.sleep(10)
        minute = (time.monotonic() - started) / 60
        if not killed and minute >= args.kill_at:
            pid = jobs_driver_pid(ROOT / ".runtime")
            if pid is None:
                events.append(f"{minute:.1f} min: no jobs driver found to kill")
            else:
                os.kill(pid, signal.SIGKILL)
                events.append(f"{minute:.1f} min: SIGKILL to the jobs driver (pid {pid})")
            killed = True
            print(events[-1], flush=True)
        if not restarted and minute >= args.broker_restart_at:
            stopped = cli("kafka", "stop", timeout=300)
            time.sleep(30)
            again = cli("kafka", "start", timeout=300)
            events.append(
                f"{minute:.1f} min: broker stopped (exit {stopped.returncode}) and started again "
                f"(exit {again.returncode})"
            )
            restarted = True
            print(events[-1], flush=True)
        if not workers_killed and minute >= args.kill_python_workers_at:
            pids = python_workers(jobs_driver_pid(ROOT / ".runtime"))
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            events.append(f"{minute:.1f} min: SIGKILL to the Python workers {pids}")
            workers_killed = True
            print(events[-1], flush=True)
        if minute >= next_sample:
            sample(minute, args.out, log)
            next_sample += args.sample_minutes
    events.append(f"start_all exited {run_all.returncode}")
    print(events[-1], flush=True)
    restarts = re.findall(r"(?:exited|restarted) [^\n]*", log.read_text(errors="replace"))
    cli("kafka", "start", timeout=300)
    try:
        catch_up = cli("run", "bronze", "silver", "gold", "alerts", "--available-now", timeout=3600)
        events.append(f"catch-up exit {catch_up.returncode}")
        reconcile = cli("reconcile", "--json", timeout=3600)
        events.append(f"reconcile exit {reconcile.returncode}")
        final = sample((time.monotonic() - started) / 60, args.out, log)
    finally:
        cli("kafka", "stop", timeout=300)
    try:
        result = json.loads(reconcile.stdout)
    except json.JSONDecodeError:
        result = {"ok": False, "error": reconcile.stderr[-2000:]}
    summary = {
        "events": events,
        "restart_lines": restarts[:20],
        "reconcile_ok": result.get("ok"),
        "ledgers": result.get("ledgers"),
        "final": final,
    }
    with args.out.open("a") as handle:
        handle.write(json.dumps({"summary": summary}) + "\n")
    print(json.dumps(summary, indent=1)[:6000])
    return 0 if result.get("ok") and run_all.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
