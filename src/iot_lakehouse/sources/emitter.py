"""File emitter: replay sensor files into a landing folder a few at a time, without a broker.

A streaming exercise for Spark's file source. ``reset`` fills an *init* folder with copies of
the source files and empties the *landing* folder. ``run`` then moves files from init to landing
in small random batches, with random pauses between them, until init is empty. A reader watching
landing never sees a half-written file: a move on one filesystem is a rename, and across
filesystems the file is first copied under a hidden name (Spark's file source skips names
starting with ``.`` or ``_``) and then renamed into place.

Both folders are the emitter's: a hidden manifest in each records the files it put there, and
``reset`` deletes those files only. A folder it did not make (no manifest) is taken only if it
is missing or empty, so ``--init-dir ~`` is refused instead of emptied.

    iot-lakehouse emitter reset --source-dir ../shared/external/di07_sensor_data \
        --init-dir data/init --landing-dir data/landing --pattern 'sensor_data_*.json'
    iot-lakehouse emitter run --init-dir data/init --landing-dir data/landing --seed 7
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from iot_lakehouse.errors import ConfigError, LakehouseError
from iot_lakehouse.logs import kv

logger = logging.getLogger(__name__)

KEEP_FILE = ".gitkeep"
MANIFEST_FILE = ".emitter-manifest.json"  # in init and landing: the files the emitter put there
HIDDEN_PREFIXES = (".", "_")
TEMP_SUFFIX = ".emitter-tmp"
DEFAULT_PATTERN = "*.json"

T = TypeVar("T")


# --- pure helpers ---------------------------------------------------------------------------


def natural_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key that orders numbers by value: ``sensor_data_9`` < ``sensor_data_10`` < ``_100``."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts)), name


def is_hidden(name: str) -> bool:
    """True for names Spark's file source ignores (leading ``.`` or ``_``)."""
    return name.startswith(HIDDEN_PREFIXES)


def choose_batch_size(rng: random.Random, batch_min: int, batch_max: int) -> int:
    """A batch size drawn uniformly from ``[batch_min, batch_max]``."""
    return rng.randint(batch_min, batch_max)


def choose_delay(rng: random.Random, min_delay_s: float, max_delay_s: float) -> float:
    """A pause in seconds drawn uniformly from ``[min_delay_s, max_delay_s]``."""
    return rng.uniform(min_delay_s, max_delay_s)


def take_batch(pending: Sequence[T], size: int) -> list[T]:
    """The first ``size`` items of ``pending`` (all of them if fewer remain)."""
    return list(pending[:size])


# --- folders ----------------------------------------------------------------------------------


def _resolved(path: Path) -> Path:
    return path.expanduser().resolve()


def _covers(folder: Path, other: Path) -> bool:
    """True if ``folder`` is ``other`` or one of its parents (after resolving symlinks)."""
    a, b = _resolved(folder), _resolved(other)
    return a == b or b.is_relative_to(a)


def matching_files(source_dir: Path, pattern: str) -> list[Path]:
    """Regular files directly in ``source_dir`` whose name matches the glob ``pattern``."""
    if not source_dir.is_dir():
        what = "is not a folder" if source_dir.exists() else "does not exist"
        raise ConfigError(f"source dir {source_dir} {what}; give --source-dir an existing folder")
    files = [
        path
        for path in source_dir.iterdir()
        if path.is_file() and fnmatch.fnmatchcase(path.name, pattern)
    ]
    if not files:
        raise ConfigError(
            f"no file in {source_dir} matches --pattern {pattern!r}; "
            "check the folder or the pattern (e.g. 'sensor_data_*.json')"
        )
    return sorted(files, key=lambda p: natural_key(p.name))


def check_reset_dirs(source_dir: Path, init_dir: Path, landing_dir: Path) -> None:
    """Refuse folder choices that would make ``reset`` delete the source files."""
    for option, folder in (("--init-dir", init_dir), ("--landing-dir", landing_dir)):
        if _covers(folder, source_dir):
            raise ConfigError(
                f"{option} {folder} is or contains the source dir {source_dir}; "
                "reset empties it, which would delete the source files. Use another folder"
            )
    if _resolved(init_dir) == _resolved(landing_dir):
        raise ConfigError(f"--init-dir and --landing-dir are the same folder ({init_dir})")


def read_manifest(folder: Path) -> frozenset[str] | None:
    """Names of the files the emitter put in ``folder``, or None if it never claimed it."""
    path = folder / MANIFEST_FILE
    try:
        recorded = json.loads(path.read_text())
        return frozenset(str(name) for name in recorded["files"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a manifest the emitter can read ({exc}); empty {folder} yourself "
            "and delete that file, then reset again"
        ) from None


def write_manifest(folder: Path, names: Iterable[str]) -> None:
    """Record (atomically) that the files ``names`` of ``folder`` are the emitter's."""
    path = folder / MANIFEST_FILE
    tmp = folder / f"{MANIFEST_FILE}{TEMP_SUFFIX}"
    files = sorted(set(names), key=natural_key)
    tmp.write_text(json.dumps({"written_by": "iot-lakehouse emitter", "files": files}, indent=1))
    os.replace(tmp, path)


def is_own_temp(name: str, placed: frozenset[str]) -> bool:
    """True for the temporary copy ``publish_file`` makes of a file the emitter placed."""
    return (
        name.startswith(".")
        and name.endswith(TEMP_SUFFIX)
        and name[1 : -len(TEMP_SUFFIX)] in placed
    )


def placed_files(folder: Path, option: str) -> frozenset[str]:
    """The files of ``folder`` that ``reset`` may delete: the ones the emitter put there.

    A missing folder, or one holding nothing but ``.gitkeep``, is taken as the emitter's (with
    nothing to delete). Any other folder without the emitter's manifest is refused.
    """
    if not folder.exists():
        return frozenset()
    if not folder.is_dir():
        raise ConfigError(f"{option} {folder} is not a folder")
    placed = read_manifest(folder)
    if placed is not None:
        return placed
    others = sorted(
        (p.name for p in folder.iterdir() if not p.name.startswith((KEEP_FILE, MANIFEST_FILE))),
        key=natural_key,
    )
    if others:
        raise ConfigError(
            f"{option} {folder} holds files the emitter did not put there (e.g. {others[0]}); "
            "reset deletes only its own files. Give it a new or empty folder, or empty this "
            "one yourself"
        )
    return frozenset()


@dataclass(frozen=True)
class ClearResult:
    """What emptying one folder did."""

    deleted: tuple[Path, ...]
    kept_dirs: tuple[Path, ...]
    kept_files: tuple[Path, ...] = ()


def clear_dir(folder: Path, placed: frozenset[str] = frozenset()) -> ClearResult:
    """Delete the files the emitter placed in ``folder`` (``placed``, and their temporary
    copies), creating the folder if missing; then record that it holds none of the emitter's.

    Everything else (``.gitkeep``, subfolders, files someone else put there) is left and reported.
    """
    folder.mkdir(parents=True, exist_ok=True)
    deleted: list[Path] = []
    kept_dirs: list[Path] = []
    kept_files: list[Path] = []
    for entry in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name == KEEP_FILE or entry.name.startswith(MANIFEST_FILE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            kept_dirs.append(entry)
        elif entry.name in placed or is_own_temp(entry.name, placed):
            entry.unlink()
            deleted.append(entry)
        else:
            kept_files.append(entry)
    write_manifest(folder, ())
    return ClearResult(tuple(deleted), tuple(kept_dirs), tuple(kept_files))


def check_no_foreign_namesakes(
    sources: Sequence[Path], folders: Iterable[tuple[Path, frozenset[str]]]
) -> None:
    """Refuse when a file the emitter did not place has the name of a source file: reset would
    overwrite it in init, and run could not publish next to it in landing."""
    names = sorted({p.name for p in sources}, key=natural_key)
    for folder, placed in folders:
        for name in names:
            path = folder / name
            if name not in placed and (path.exists() or path.is_symlink()):
                raise ConfigError(
                    f"{path} was not put there by the emitter and a source file has its name; "
                    "move it away and reset again"
                )


@dataclass(frozen=True)
class ResetReport:
    """Outcome of ``reset``: the files deleted from init and landing, the files copied, and
    what was left as it is (subfolders, files the emitter did not place)."""

    deleted: tuple[Path, ...]
    copied: tuple[Path, ...]
    kept_dirs: tuple[Path, ...]
    kept_files: tuple[Path, ...] = ()


def reset_dirs(
    source_dir: Path, init_dir: Path, landing_dir: Path, pattern: str = DEFAULT_PATTERN
) -> ResetReport:
    """Delete the emitter's files from init and landing, then copy the matching source files
    to init (recording them as the emitter's).

    Everything is checked before anything is deleted; folders the emitter did not make are
    refused unless missing or empty, and no file it did not place is deleted or overwritten.
    """
    check_reset_dirs(source_dir, init_dir, landing_dir)
    sources = matching_files(source_dir, pattern)
    placed_init = placed_files(init_dir, "--init-dir")
    placed_landing = placed_files(landing_dir, "--landing-dir")
    check_no_foreign_namesakes(sources, ((init_dir, placed_init), (landing_dir, placed_landing)))
    try:
        cleared = [clear_dir(init_dir, placed_init), clear_dir(landing_dir, placed_landing)]
        write_manifest(init_dir, (src.name for src in sources))  # before the copies exist
        copied = []
        for src in sources:
            # copyfile, not copy2: the copies get a fresh modification time (see publish_file).
            copied.append(Path(shutil.copyfile(src, init_dir / src.name)))
    except OSError as exc:
        raise LakehouseError(f"reset failed: {exc}") from exc
    report = ResetReport(
        deleted=tuple(p for c in cleared for p in c.deleted),
        copied=tuple(copied),
        kept_dirs=tuple(p for c in cleared for p in c.kept_dirs),
        kept_files=tuple(p for c in cleared for p in c.kept_files),
    )
    logger.info(
        "%s",
        kv(
            event="emitter_reset",
            deleted=len(report.deleted),
            copied=len(report.copied),
            kept=len(report.kept_files),
            source=source_dir,
            init=init_dir,
            landing=landing_dir,
        ),
    )
    return report


def pending_files(init_dir: Path) -> list[Path]:
    """Files waiting in ``init_dir`` in natural name order (hidden and ``_`` names excluded)."""
    files = [p for p in init_dir.iterdir() if p.is_file() and not is_hidden(p.name)]
    return sorted(files, key=lambda p: natural_key(p.name))


def same_filesystem(a: Path, b: Path) -> bool:
    """True if ``a`` and ``b`` live on the same device (a rename between them can work)."""
    return os.stat(a).st_dev == os.stat(b).st_dev


def publish_file(src: Path, landing_dir: Path, *, cross_device: bool = False) -> Path:
    """Move ``src`` into ``landing_dir`` so that a reader never sees it half-written.

    On one filesystem this is one ``os.replace``. Across filesystems (or when the rename fails
    with EXDEV, e.g. between two mounts), the file is copied to a hidden temporary name in
    landing, flushed to disk, renamed into place, and only then removed from init.
    The file gets the current time as modification time: it "arrives" now, and Spark's file
    source compares file times (``maxFileAge``), so old source times must not leak into landing.
    """
    dest = landing_dir / src.name
    if dest.exists():
        raise LakehouseError(
            f"{dest} already exists; run `iot-lakehouse emitter reset` to start over"
        )
    try:
        if not cross_device:
            os.utime(src)
            try:
                os.replace(src, dest)
                return dest
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        tmp = landing_dir / f".{src.name}{TEMP_SUFFIX}"
        try:
            with src.open("rb") as fin, tmp.open("wb") as fout:
                shutil.copyfileobj(fin, fout)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        src.unlink()
    except OSError as exc:
        raise LakehouseError(f"could not move {src} to {landing_dir}: {exc}") from exc
    return dest


# --- the run loop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EmitterConfig:
    """What ``emitter run`` does: folders, batch size range, pause range, seed."""

    init_dir: Path
    landing_dir: Path
    batch_min: int = 1
    batch_max: int = 5
    min_delay_s: float = 0.5
    max_delay_s: float = 2.0
    seed: int | None = None

    def validate(self) -> None:
        """Raise ConfigError naming the first option that cannot work."""
        if self.batch_min < 1:
            raise ConfigError(f"--batch-min {self.batch_min} must be at least 1")
        if self.batch_max < self.batch_min:
            raise ConfigError(
                f"--batch-max {self.batch_max} must be at least --batch-min {self.batch_min}"
            )
        for option, value in (
            ("--min-delay-s", self.min_delay_s),
            ("--max-delay-s", self.max_delay_s),
        ):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{option} {value} must be a number of seconds, 0 or more")
        if self.max_delay_s < self.min_delay_s:
            raise ConfigError(
                f"--max-delay-s {self.max_delay_s:g} must be at least "
                f"--min-delay-s {self.min_delay_s:g}"
            )


@dataclass(frozen=True)
class Batch:
    """One batch moved to landing."""

    number: int
    files: tuple[str, ...]
    remaining: int
    delay_s: float


@dataclass(frozen=True)
class RunReport:
    """Outcome of ``run``: batches and files moved, files left in init, whether it was stopped."""

    batches: int
    moved: int
    remaining: int
    stopped: bool


def run_emitter(
    config: EmitterConfig,
    stop: threading.Event | None = None,
    on_batch: Callable[[Batch], None] | None = None,
) -> RunReport:
    """Move files from init to landing in random batches after random pauses until init is empty.

    Files go in natural name order, so readings arrive roughly in time order. When ``stop`` is
    set the current batch is finished and the run returns; a pause ends at once.
    """
    config.validate()
    init_dir, landing_dir = config.init_dir, config.landing_dir
    if not init_dir.is_dir():
        raise ConfigError(
            f"init dir {init_dir} does not exist; fill it with `iot-lakehouse emitter reset`"
        )
    if _resolved(init_dir) == _resolved(landing_dir):
        raise ConfigError(f"--init-dir and --landing-dir are the same folder ({init_dir})")
    landing_dir.mkdir(parents=True, exist_ok=True)
    pending = pending_files(init_dir)
    clashes = [p.name for p in pending if (landing_dir / p.name).exists()]
    if clashes:
        raise ConfigError(
            f"{len(clashes)} file(s) of {init_dir} are already in {landing_dir} "
            f"(e.g. {clashes[0]}); run `iot-lakehouse emitter reset` to start over"
        )
    cross_device = not same_filesystem(init_dir, landing_dir)
    # Files reset copied to init stay the emitter's in landing: recorded there before they move.
    placed_init = set(read_manifest(init_dir) or ())
    placed_landing = set(read_manifest(landing_dir) or ())
    stop = stop or threading.Event()
    rng = random.Random(config.seed)
    logger.info(
        "%s",
        kv(
            event="emitter_start",
            init=init_dir,
            landing=landing_dir,
            files=len(pending),
            cross_device=cross_device,
            seed=config.seed,
        ),
    )
    number = moved = 0
    stopped = False
    while True:
        pending = pending_files(init_dir)
        if not pending:
            break
        delay = choose_delay(rng, config.min_delay_s, config.max_delay_s)
        if stop.wait(delay):
            stopped = True
            break
        batch = take_batch(pending, choose_batch_size(rng, config.batch_min, config.batch_max))
        ours = {p.name for p in batch} & placed_init
        if ours:
            placed_landing |= ours
            write_manifest(landing_dir, placed_landing)
        for src in batch:
            publish_file(src, landing_dir, cross_device=cross_device)
        if ours:
            placed_init -= ours
            write_manifest(init_dir, placed_init)
        number += 1
        moved += len(batch)
        done = Batch(number, tuple(p.name for p in batch), len(pending) - len(batch), delay)
        logger.debug(
            "%s",
            kv(event="emitter_batch", batch=number, files=len(batch), remaining=done.remaining),
        )
        if on_batch is not None:
            on_batch(done)
    remaining = len(pending_files(init_dir))
    report = RunReport(batches=number, moved=moved, remaining=remaining, stopped=stopped)
    logger.info(
        "%s",
        kv(
            event="emitter_stop",
            reason="stop_requested" if stopped else "init_empty",
            batches=number,
            moved=moved,
            remaining=remaining,
        ),
    )
    return report


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM set ``stop`` instead of interrupting the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- CLI wiring -------------------------------------------------------------------------------


def add_emitter_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emitter reset`` and ``emitter run`` to the CLI's subcommands."""
    d = EmitterConfig(Path("init"), Path("landing"))
    emitter = subparsers.add_parser(
        "emitter", help="replay sensor files into a landing folder (file-source exercise)"
    )
    actions = emitter.add_subparsers(dest="emitter_action", required=True)

    reset = actions.add_parser(
        "reset",
        help="delete the emitter's files from init and landing, copy the source files to init",
    )
    reset.add_argument("--source-dir", type=Path, required=True, help="folder of the data files")
    reset.add_argument("--init-dir", type=Path, required=True, help="files waiting to be sent")
    reset.add_argument("--landing-dir", type=Path, required=True, help="folder the reader watches")
    reset.add_argument(
        "--pattern",
        default=DEFAULT_PATTERN,
        help=f"glob of the source file names (default {DEFAULT_PATTERN!r})",
    )

    run = actions.add_parser(
        "run", help="move files from init to landing in random batches until init is empty"
    )
    run.add_argument("--init-dir", type=Path, required=True, help="files waiting to be sent")
    run.add_argument("--landing-dir", type=Path, required=True, help="folder the reader watches")
    run.add_argument(
        "--batch-min", type=int, default=d.batch_min, help=f"fewest files per batch ({d.batch_min})"
    )
    run.add_argument(
        "--batch-max", type=int, default=d.batch_max, help=f"most files per batch ({d.batch_max})"
    )
    run.add_argument(
        "--min-delay-s",
        type=float,
        default=d.min_delay_s,
        help=f"shortest pause before a batch, seconds ({d.min_delay_s:g})",
    )
    run.add_argument(
        "--max-delay-s",
        type=float,
        default=d.max_delay_s,
        help=f"longest pause before a batch, seconds ({d.max_delay_s:g})",
    )
    run.add_argument("--seed", type=int, default=None, help="random seed (default: random)")


def config_from_args(args: argparse.Namespace) -> EmitterConfig:
    """The EmitterConfig that ``emitter run``'s options describe (validated)."""
    config = EmitterConfig(
        init_dir=args.init_dir,
        landing_dir=args.landing_dir,
        batch_min=args.batch_min,
        batch_max=args.batch_max,
        min_delay_s=args.min_delay_s,
        max_delay_s=args.max_delay_s,
        seed=args.seed,
    )
    config.validate()
    return config


def _print_batch(batch: Batch) -> None:
    print(
        f"batch {batch.number}: moved {len(batch.files)} file(s) after {batch.delay_s:.2f}s: "
        f"{', '.join(batch.files)} (remaining {batch.remaining})",
        flush=True,
    )


def run_emitter_command(args: argparse.Namespace) -> int:
    """Run ``emitter reset`` or ``emitter run`` from parsed arguments; return the exit status."""
    if args.emitter_action == "reset":
        report = reset_dirs(args.source_dir, args.init_dir, args.landing_dir, args.pattern)
        for path in report.deleted:
            print(f"deleted {path}")
        for path in report.kept_dirs:
            print(f"left folder {path} as it is")
        for path in report.kept_files:
            print(f"left {path} as it is (not placed by the emitter)")
        print(
            f"reset: deleted {len(report.deleted)} file(s) from {args.init_dir} and "
            f"{args.landing_dir}; copied {len(report.copied)} file(s) matching "
            f"{args.pattern!r} from {args.source_dir} to {args.init_dir}"
        )
        return 0
    if args.emitter_action == "run":
        config = config_from_args(args)
        stop = threading.Event()
        with stop_on_signals(stop):
            result = run_emitter(config, stop=stop, on_batch=_print_batch)
        if result.stopped:
            print(
                f"stopped: moved {result.moved} file(s) in {result.batches} batch(es); "
                f"{result.remaining} left in {config.init_dir}"
            )
        else:
            print(
                f"done: moved {result.moved} file(s) in {result.batches} batch(es); "
                f"{config.init_dir} is empty"
            )
        return 0
    raise AssertionError(args.emitter_action)
