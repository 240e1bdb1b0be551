"""When to start a failed thing again: exponential backoff and a budget that refills.

Used by a job for its failed queries (``jobs.run_in_session``), by a driver running several
jobs for a job that failed for good (``jobs.run_side_by_side``) and by ``iot-lakehouse all`` for
its children that died (``supervisor``). A run that lasted ``healthy_s`` before it failed was
healthy: the count of failures in a row starts again from zero, and so does the backoff.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIRST_DELAY_S = 5.0
MAX_DELAY_S = 300.0


@dataclass(frozen=True)
class RestartPolicy:
    """``restarts``: failures in a row started again before giving up (None: never give up);
    the wait before the n-th restart in a row is ``first_delay_s * 2**(n-1)``, at most
    ``max_delay_s``."""

    restarts: int | None
    healthy_s: float
    first_delay_s: float = FIRST_DELAY_S
    max_delay_s: float = MAX_DELAY_S

    def delay(self, failures: int) -> float:
        """Seconds to wait before the restart after ``failures`` failures in a row (≥ 1)."""
        return float(min(self.first_delay_s * 2 ** max(0, failures - 1), self.max_delay_s))

    def failures_after(self, failures: int, ran_s: float) -> int:
        """Failures in a row once a run of ``ran_s`` seconds failed, ``failures`` before it."""
        return 1 if ran_s >= self.healthy_s else failures + 1

    def gives_up(self, failures: int) -> bool:
        return self.restarts is not None and failures > self.restarts


def keep_running(
    run_once: Callable[[], None],
    policy: RestartPolicy,
    stop: threading.Event,
    retry_on: tuple[type[BaseException], ...],
    on_failure: Callable[[BaseException, int, float], None],
    never_retry: tuple[type[BaseException], ...] = (),
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call ``run_once`` until it returns, ``stop`` is set or it has failed (with one of
    ``retry_on`` that is none of ``never_retry``) more often in a row than ``policy`` allows,
    then re-raise the last error. Before each restart: ``on_failure(error, failures in a row,
    seconds to wait)``."""
    failures = 0
    while not stop.is_set():
        began = clock()
        try:
            run_once()
            return
        except never_retry:
            raise
        except retry_on as exc:
            failures = policy.failures_after(failures, clock() - began)
            if policy.gives_up(failures) or stop.is_set():
                raise
            delay = policy.delay(failures)
            on_failure(exc, failures, delay)
            if stop.wait(delay):
                return


JOB_STATES_FILE = "job_states.json"  # under the runtime folder, written by a one-driver process


def up_state(restarts: int) -> str:
    """The state of a running thing started again ``restarts`` times, as the status shows it."""
    return f"up,restarts={restarts}" if restarts else "up"


@dataclass
class JobStates:
    """The state of each job a driver runs beside others (``up``, ``up,restarts=N``,
    ``restarting``, ``refused``), kept in a small JSON file with the driver's pid, where
    ``all`` reads it for its status line."""

    path: Path
    states: dict[str, str]
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def set(self, job: str, state: str) -> None:
        with self._lock:
            self.states[job] = state
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "jobs": self.states}))
            os.replace(tmp, self.path)


def read_job_states(path: Path, pid: int) -> dict[str, str]:
    """The job states process ``pid`` wrote to ``path``; {} if it wrote none (or the file is
    another process's, or unreadable)."""
    try:
        written = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(written, dict) or written.get("pid") != pid:
        return {}
    jobs = written.get("jobs")
    return {str(k): str(v) for k, v in jobs.items()} if isinstance(jobs, dict) else {}


def jobs_health(path: Path, alive: Callable[[int], bool]) -> tuple[bool, str]:
    """Whether the driver that wrote ``path`` (``JobStates``) still runs with every job ``up``,
    and a line saying what was found; for ``iot-lakehouse health`` (a container healthcheck)."""
    try:
        written = json.loads(path.read_text())
    except FileNotFoundError:
        return False, (
            f"no job states at {path}: no driver running several jobs has started here "
            "(`iot-lakehouse run bronze silver gold alerts` and `all` write them)"
        )
    except (OSError, ValueError) as exc:
        return False, f"cannot read the job states at {path}: {exc}"
    pid = written.get("pid") if isinstance(written, dict) else None
    jobs = written.get("jobs") if isinstance(written, dict) else None
    if not isinstance(pid, int) or not isinstance(jobs, dict):
        return False, f"{path} is not a job states file (pid and jobs expected)"
    if not alive(pid):
        return False, f"the driver that wrote {path} (pid {pid}) is not running"
    if not jobs:
        return False, f"the driver (pid {pid}) has not started its jobs yet"
    line = " ".join(f"{job}={state}" for job, state in jobs.items())
    down = [job for job, state in jobs.items() if not str(state).startswith("up")]
    if down:
        return False, f"not up: {', '.join(down)} ({line}); see the driver's log"
    return True, f"driver pid {pid}: {line}"
