"""The file emitter: reset of init/landing, batched atomic moves, stopping, options and CLI."""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from iot_lakehouse.errors import ConfigError, LakehouseError
from iot_lakehouse.sources import emitter
from iot_lakehouse.sources.emitter import (
    Batch,
    EmitterConfig,
    add_emitter_parser,
    choose_batch_size,
    is_hidden,
    natural_key,
    pending_files,
    publish_file,
    reset_dirs,
    run_emitter,
    run_emitter_command,
)

TYPES = [("temperature", "°C", 21.5), ("humidity", "%", 40.0), ("co2", "ppm", 650.0)]


def long_reading(i: int) -> dict[str, Any]:
    kind, unit, base = TYPES[i % len(TYPES)]
    return {
        "timestamp": f"2025-01-12T08:{18 + i // 3600 % 40:02d}:{i % 60:02d}Z",
        "device_id": f"sensor-{kind[:4]}-{i % 5:03d}",
        "building": "AB"[i % 2],
        "floor": i % 4,
        "type": kind,
        "value": round(base + (i % 7) * 0.5, 1),
        "unit": unit,
    }


def write_source(folder: Path, numbers: range, lines: int = 5) -> dict[str, bytes]:
    """JSON-lines files ``sensor_data_<n>.json`` in the long format; returns name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {}
    for n in numbers:
        body = "".join(
            json.dumps(long_reading(n * lines + k), ensure_ascii=False) + "\n" for k in range(lines)
        ).encode()
        name = f"sensor_data_{n}.json"
        (folder / name).write_bytes(body)
        contents[name] = body
    return contents


def write_source_dir(folder: Path, numbers: range) -> Path:
    write_source(folder, numbers)
    return folder


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not is_hidden(p.name))


def natural(names: Any) -> list[str]:
    return sorted(names, key=natural_key)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """source (read-only by convention), init and landing with a .gitkeep each."""
    source, init, landing = tmp_path / "source", tmp_path / "init", tmp_path / "landing"
    for folder in (init, landing):
        folder.mkdir()
        (folder / ".gitkeep").write_text("")
    source.mkdir()
    return source, init, landing


# The reader runs in its own process, like Spark's file source: a thread of the test process
# would rarely get the GIL in the middle of a copy, so it could not catch a half-written file.
WATCHER_SCRIPT = r"""
import hashlib, json, os, sys
landing, expected_file, stop_file = sys.argv[1:4]
with open(expected_file) as f:
    expected = json.load(f)
verified, problems, scans = set(), {}, 0
def scan():
    global scans
    scans += 1
    for entry in os.scandir(landing):
        name = entry.name
        if name.startswith((".", "_")) or name in verified:
            continue
        with open(entry.path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != expected.get(name):
            problems.setdefault(name, f"{name}: saw {len(data)} bytes, not the whole file")
            continue
        try:
            ok = data.endswith(b"\n") and all(json.loads(l) for l in data.splitlines())
        except ValueError:
            ok = False
        if not ok:
            problems.setdefault(name, f"{name}: not complete JSON lines")
        verified.add(name)
print("ready", flush=True)
while not os.path.exists(stop_file):
    scan()
scan()
print(json.dumps({"verified": sorted(verified), "problems": list(problems.values()),
                  "scans": scans}))
"""


class LandingWatcher:
    """A separate process that checks every visible file of landing the moment it appears."""

    def __init__(self, landing: Path, expected: dict[str, bytes]) -> None:
        self.landing = landing
        self.control = Path(tempfile.mkdtemp(prefix="watcher-"))
        hashes = {name: hashlib.sha256(data).hexdigest() for name, data in expected.items()}
        (self.control / "expected.json").write_text(json.dumps(hashes))
        self.verified: set[str] = set()
        self.problems: list[str] = []
        self.scans = 0

    def __enter__(self) -> LandingWatcher:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WATCHER_SCRIPT,
                *map(str, (self.landing, self.control / "expected.json", self.control / "stop")),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        (self.control / "stop").touch()
        try:
            out, _ = self.process.communicate(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            shutil.rmtree(self.control, ignore_errors=True)
        result = json.loads(out.strip().splitlines()[-1])
        self.verified, self.problems, self.scans = (
            set(result["verified"]),
            result["problems"],
            result["scans"],
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iot-lakehouse")
    add_emitter_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def cli(*argv: object) -> argparse.Namespace:
    """Parse ``iot-lakehouse emitter …`` arguments with a parser built by add_emitter_parser."""
    return build_parser().parse_args(["emitter", *map(str, argv)])


# --- pure helpers ---------------------------------------------------------------------------


def test_natural_order_puts_numbers_in_value_order() -> None:
    names = ["sensor_data_100.json", "sensor_data_10.json", "sensor_data_9.json", "b.json"]
    assert natural(names) == [
        "b.json",
        "sensor_data_9.json",
        "sensor_data_10.json",
        "sensor_data_100.json",
    ]


def test_batch_sizes_stay_within_bounds_and_reach_both_ends() -> None:
    rng = random.Random(3)
    sizes = {choose_batch_size(rng, 2, 4) for _ in range(500)}
    assert sizes == {2, 3, 4}


def test_pending_files_skip_hidden_names_and_folders(tmp_path: Path) -> None:
    for name in ("b_2.json", "b_10.json", ".gitkeep", "_tmp.json", ".x.emitter-tmp"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in pending_files(tmp_path)] == ["b_2.json", "b_10.json"]


@pytest.mark.parametrize("cross_device", [False, True])
def test_publish_file_moves_with_a_fresh_time_and_leaves_no_temp(
    tmp_path: Path, cross_device: bool
) -> None:
    src_dir, landing = tmp_path / "init", tmp_path / "landing"
    src_dir.mkdir()
    landing.mkdir()
    src = src_dir / "a.json"
    src.write_text('{"value": 1}\n')
    os.utime(src, (1_000_000_000, 1_000_000_000))  # 2001: must not leak into landing
    dest = publish_file(src, landing, cross_device=cross_device)
    assert dest == landing / "a.json"
    assert dest.read_text() == '{"value": 1}\n'
    assert not src.exists()
    assert os.listdir(landing) == ["a.json"]
    assert dest.stat().st_mtime > time.time() - 60


def test_publish_file_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "a.json").write_text("old\n")
    src = tmp_path / "a.json"
    src.write_text("new\n")
    with pytest.raises(LakehouseError, match="already exists"):
        publish_file(src, tmp_path / "landing")
    assert src.read_text() == "new\n"
    assert (tmp_path / "landing" / "a.json").read_text() == "old\n"


# --- reset ------------------------------------------------------------------------------------


def test_reset_deletes_its_own_files_keeps_the_rest_and_copies_only_matching(
    dirs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    source, init, landing = dirs
    expected = write_source(source, range(8, 13))
    (source / "readme.txt").write_text("not data\n")
    (source / "other_1.json").write_text("{}\n")
    (source / "nested").mkdir()
    (source / "nested" / "sensor_data_99.json").write_text("{}\n")
    before = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
    # An earlier round: reset from another source, one batch moved to landing, and a temporary
    # copy of a file recorded in landing (a crash in a cross-filesystem move leaves one).
    earlier = tmp_path / "earlier"
    write_source(earlier, range(1, 3))
    reset_dirs(earlier, init, landing)
    stop = threading.Event()
    run_emitter(EmitterConfig(init, landing, 1, 1, 0, 0), stop, on_batch=lambda b: stop.set())
    (landing / ".sensor_data_1.json.emitter-tmp").write_text("{")
    # Things the emitter did not put there.
    (init / "subfolder").mkdir()
    (landing / "by_hand.txt").write_text("mine\n")

    report = reset_dirs(source, init, landing, "sensor_data_*.json")

    assert sorted(p.name for p in report.deleted) == [
        ".sensor_data_1.json.emitter-tmp",
        "sensor_data_1.json",
        "sensor_data_2.json",
    ]
    assert [p.name for p in report.copied] == natural(expected)
    assert report.kept_dirs == (init / "subfolder",)
    assert report.kept_files == (landing / "by_hand.txt",)
    assert visible(init) == sorted(["subfolder", *expected])
    assert {name: (init / name).read_bytes() for name in expected} == expected
    assert visible(landing) == ["by_hand.txt"]
    assert (landing / ".gitkeep").exists() and (init / ".gitkeep").exists()
    assert {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()} == before


def test_reset_creates_missing_folders(tmp_path: Path) -> None:
    expected = write_source(tmp_path / "src", range(1, 3))
    report = reset_dirs(tmp_path / "src", tmp_path / "a" / "init", tmp_path / "a" / "landing")
    assert report.deleted == ()
    assert visible(tmp_path / "a" / "init") == sorted(expected)
    assert os.listdir(tmp_path / "a" / "landing") == [emitter.MANIFEST_FILE]


DANGEROUS: dict[str, Callable[[Path, Path, Path], tuple[Path, Path]]] = {
    "init is source": lambda s, i, la: (s, la),
    "landing is source": lambda s, i, la: (i, s),
    "init contains source": lambda s, i, la: (s.parent, la),
    "landing is a symlink to source": lambda s, i, la: (i, _symlink(s, la.parent / "link")),
    "init is landing": lambda s, i, la: (la, la),
}


def _symlink(target: Path, link: Path) -> Path:
    link.symlink_to(target, target_is_directory=True)
    return link


@pytest.mark.parametrize("case", DANGEROUS)
def test_reset_refuses_folders_that_would_delete_the_source(
    dirs: tuple[Path, Path, Path], case: str
) -> None:
    source, init, landing = dirs
    expected = write_source(source, range(1, 4))
    (landing / "keep_me.json").write_text("{}\n")
    init_dir, landing_dir = DANGEROUS[case](source, init, landing)
    with pytest.raises(ConfigError, match=r"source dir|same folder"):
        reset_dirs(source, init_dir, landing_dir, "*.json")
    assert {p.name: p.read_bytes() for p in source.iterdir()} == expected
    assert (landing / "keep_me.json").exists()


@pytest.mark.parametrize(
    ("make_source", "pattern", "message"),
    [
        (lambda p: p / "missing", "*.json", "does not exist"),
        (lambda p: p / "file.json", "*.json", "is not a folder"),
        (lambda p: p, "sensor_data_*.csv", "no file in .* matches"),
    ],
    ids=["missing", "not-a-folder", "no-match"],
)
def test_reset_errors_before_deleting_anything(
    dirs: tuple[Path, Path, Path],
    make_source: Callable[[Path], Path],
    pattern: str,
    message: str,
) -> None:
    source, init, landing = dirs
    write_source(source, range(1, 3))
    (source / "file.json").write_text("{}\n")
    (init / "waiting.json").write_text("{}\n")
    (landing / "landed.json").write_text("{}\n")
    with pytest.raises(ConfigError, match=message):
        reset_dirs(make_source(source), init, landing, pattern)
    assert (init / "waiting.json").exists()
    assert (landing / "landed.json").exists()


def a_users_folder(folder: Path) -> dict[str, bytes]:
    """A folder the emitter did not make (a home folder, a project root): files to keep."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {".bashrc": b"export PATH\n", "notes.txt": b"mine\n", "sensor_data_1.json": b"{}\n"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "projects").mkdir()
    return files


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("which", ["init", "landing", "both"])
def test_reset_refuses_a_folder_it_did_not_make_and_deletes_nothing(
    tmp_path: Path, which: str
) -> None:
    # `emitter reset --init-dir ~` (or the project root) used to delete every file in it.
    source, home = tmp_path / "source", tmp_path / "home"
    write_source(source, range(1, 4))
    kept = a_users_folder(home)
    init = home if which in ("init", "both") else tmp_path / "init"
    landing = home if which == "landing" else tmp_path / "landing"
    if which == "both":
        landing = tmp_path / "other"
        a_users_folder(landing)
    option = "--init-dir" if which != "landing" else "--landing-dir"
    try:
        reset_dirs(source, init, landing, "*.json")
        message = "reset went ahead"
    except ConfigError as exc:
        message = str(exc)
    assert files_in(home) == kept, (
        f"files of a folder the emitter did not make were deleted ({message})"
    )
    assert message.startswith(f"{option} {home} holds files the emitter did not put there")
    assert "\n" not in message and "new or empty folder" in message
    assert not (tmp_path / "init").exists() and not (tmp_path / "landing").exists()


def test_a_second_reset_deletes_only_what_the_emitter_placed(dirs: tuple[Path, Path, Path]) -> None:
    source, init, landing = dirs
    first = write_source(source, range(1, 5))
    reset_dirs(source, init, landing)
    run_emitter(EmitterConfig(init, landing, 2, 2, 0, 0, seed=1), on_batch=lambda b: None)
    assert visible(landing) == sorted(first)
    # Someone else's files arrive next to the emitter's.
    (init / "notes.txt").write_text("mine\n")
    (landing / "by_hand.json").write_text("{}\n")
    (landing / "_SUCCESS").write_text("")

    report = reset_dirs(source, init, landing)

    assert sorted(p.name for p in report.deleted) == sorted(first)
    assert set(report.kept_files) == {
        init / "notes.txt",
        landing / "by_hand.json",
        landing / "_SUCCESS",
    }
    assert visible(init) == sorted([*first, "notes.txt"])
    assert visible(landing) == ["by_hand.json"] and (landing / "_SUCCESS").exists()


def test_reset_refuses_to_overwrite_a_file_it_did_not_place(
    dirs: tuple[Path, Path, Path],
) -> None:
    source, init, landing = dirs
    write_source(source, range(1, 3))
    reset_dirs(source, init, landing)
    (landing / "sensor_data_9.json").write_text("by hand\n")
    write_source(source, range(9, 10))
    with pytest.raises(ConfigError, match=r"sensor_data_9.json was not put there by the emitter"):
        reset_dirs(source, init, landing)
    assert (landing / "sensor_data_9.json").read_text() == "by hand\n"
    assert visible(init) == ["sensor_data_1.json", "sensor_data_2.json"]


# --- run --------------------------------------------------------------------------------------


def _exdev_for(init: Path, real: Callable[..., None]) -> Callable[..., None]:
    def replace(src: Any, dst: Any) -> None:
        if Path(src).parent == init:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst)

    return replace


def _slow_copyfileobj(fsrc: Any, fdst: Any, length: int = 0) -> None:
    while chunk := fsrc.read(16384):
        fdst.write(chunk)
        fdst.flush()
        time.sleep(0.001)


@pytest.mark.parametrize("mode", ["rename", "exdev_fallback"])
def test_run_moves_every_file_once_in_order_and_never_shows_a_partial_file(
    dirs: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    _, init, landing = dirs
    if mode == "exdev_fallback":
        monkeypatch.setattr(os, "replace", _exdev_for(init, os.replace))
    if mode != "rename":
        # A copy as slow as one to a network mount: a copy straight to the final name would
        # be caught half-written (checked by hand: 4 to 12 of the 12 files, per run).
        monkeypatch.setattr(shutil, "copyfileobj", _slow_copyfileobj)
    expected = write_source(init, range(7, 19), lines=1000)  # ~75 kB each
    batches: list[Batch] = []
    config = EmitterConfig(init, landing, batch_min=2, batch_max=3, min_delay_s=0, max_delay_s=0.01)

    with LandingWatcher(landing, expected) as watcher:
        report = run_emitter(config, on_batch=batches.append)

    assert watcher.problems == []
    assert watcher.verified == set(expected)
    assert watcher.scans > len(batches)
    moved = [name for batch in batches for name in batch.files]
    assert moved == natural(expected)
    assert all(2 <= len(b.files) <= 3 for b in batches[:-1]) and 1 <= len(batches[-1].files) <= 3
    assert [b.number for b in batches] == list(range(1, len(batches) + 1))
    assert [b.remaining for b in batches] == [
        len(expected) - sum(len(x.files) for x in batches[: i + 1]) for i in range(len(batches))
    ]
    assert report.moved == len(expected) and report.batches == len(batches)
    assert report.remaining == 0 and not report.stopped
    assert os.listdir(init) == [".gitkeep"]
    assert sorted(os.listdir(landing)) == sorted([".gitkeep", *expected])
    assert {name: (landing / name).read_bytes() for name in expected} == expected


def test_run_with_the_same_seed_makes_the_same_batches(tmp_path: Path) -> None:
    runs = []
    for k in range(2):
        init, landing = tmp_path / f"init{k}", tmp_path / f"landing{k}"
        write_source(init, range(1, 21))
        batches: list[Batch] = []
        run_emitter(EmitterConfig(init, landing, 1, 5, 0, 0.001, seed=42), on_batch=batches.append)
        runs.append([(b.files, round(b.delay_s, 9)) for b in batches])
    assert runs[0] == runs[1]


def test_run_stops_at_once_when_init_is_empty(dirs: tuple[Path, Path, Path]) -> None:
    _, init, landing = dirs
    started = time.monotonic()
    report = run_emitter(EmitterConfig(init, landing, min_delay_s=30, max_delay_s=30))
    assert time.monotonic() - started < 5
    assert (report.batches, report.moved, report.remaining, report.stopped) == (0, 0, 0, False)


def test_run_with_stop_already_set_moves_nothing(dirs: tuple[Path, Path, Path]) -> None:
    _, init, landing = dirs
    expected = write_source(init, range(1, 4))
    stop = threading.Event()
    stop.set()
    report = run_emitter(EmitterConfig(init, landing, min_delay_s=30, max_delay_s=30), stop=stop)
    assert report.stopped and report.moved == 0 and report.remaining == len(expected)
    assert os.listdir(landing) == [".gitkeep"]


def test_stop_during_a_batch_finishes_the_batch_then_stops(
    dirs: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, init, landing = dirs
    write_source(init, range(1, 11))
    stop = threading.Event()
    real_publish = emitter.publish_file

    def publish_then_stop(src: Path, landing_dir: Path, *, cross_device: bool = False) -> Path:
        stop.set()  # as a signal arriving in the middle of the batch would
        return real_publish(src, landing_dir, cross_device=cross_device)

    monkeypatch.setattr(emitter, "publish_file", publish_then_stop)
    batches: list[Batch] = []
    report = run_emitter(
        EmitterConfig(init, landing, 3, 3, 0, 0), stop=stop, on_batch=batches.append
    )
    assert [b.files for b in batches] == [
        ("sensor_data_1.json", "sensor_data_2.json", "sensor_data_3.json")
    ]
    assert report.stopped and report.moved == 3 and report.remaining == 7
    assert visible(landing) == ["sensor_data_1.json", "sensor_data_2.json", "sensor_data_3.json"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda i, la: (i / "missing", la), "does not exist"),
        (lambda i, la: (i, i), "same folder"),
    ],
    ids=["init-missing", "init-is-landing"],
)
def test_run_refuses_unusable_folders(
    dirs: tuple[Path, Path, Path],
    setup: Callable[[Path, Path], tuple[Path, Path]],
    message: str,
) -> None:
    _, init, landing = dirs
    write_source(init, range(1, 3))
    init_dir, landing_dir = setup(init, landing)
    with pytest.raises(ConfigError, match=message):
        run_emitter(EmitterConfig(init_dir, landing_dir, min_delay_s=0, max_delay_s=0))
    assert visible(init) == ["sensor_data_1.json", "sensor_data_2.json"]


def test_run_refuses_when_a_file_is_already_in_landing(dirs: tuple[Path, Path, Path]) -> None:
    _, init, landing = dirs
    write_source(init, range(1, 4))
    (landing / "sensor_data_3.json").write_text("{}\n")
    with pytest.raises(ConfigError, match="already in"):
        run_emitter(EmitterConfig(init, landing, min_delay_s=0, max_delay_s=0))
    assert len(visible(init)) == 3 and visible(landing) == ["sensor_data_3.json"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_min": 0}, "--batch-min 0 must be at least 1"),
        ({"batch_min": 4, "batch_max": 3}, "--batch-max 3 must be at least --batch-min 4"),
        ({"min_delay_s": -1.0}, "--min-delay-s -1.0 must be"),
        ({"max_delay_s": math.nan}, "--max-delay-s nan must be"),
        ({"max_delay_s": math.inf}, "--max-delay-s inf must be"),
        ({"min_delay_s": 2.0, "max_delay_s": 1.0}, "--max-delay-s 1 must be at least"),
    ],
)
def test_options_are_validated(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    config = EmitterConfig(tmp_path, tmp_path / "landing", **changes)
    with pytest.raises(ConfigError, match=message):
        config.validate()
    with pytest.raises(ConfigError, match=message):
        run_emitter(config)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_defaults() -> None:
    args = cli("run", "--init-dir", "i", "--landing-dir", "l")
    assert (args.batch_min, args.batch_max, args.min_delay_s, args.max_delay_s, args.seed) == (
        1,
        5,
        0.5,
        2.0,
        None,
    )
    args = cli("reset", "--source-dir", "s", "--init-dir", "i", "--landing-dir", "l")
    assert args.pattern == "*.json" and args.source_dir == Path("s")


@pytest.mark.parametrize(
    "argv",
    [
        ["emitter"],
        ["emitter", "run", "--init-dir", "i"],
        ["emitter", "run", "--init-dir", "i", "--landing-dir", "l", "--batch-min", "x"],
        ["emitter", "reset", "--init-dir", "i", "--landing-dir", "l"],
    ],
)
def test_cli_rejects_incomplete_or_malformed_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_cli_reset_then_run(
    dirs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source, init, landing = dirs
    expected = write_source(source, range(98, 103))
    reset_dirs(write_source_dir(source.parent / "earlier", range(1, 2)), init, landing)
    reset = cli(
        "reset",
        "--source-dir",
        source,
        "--init-dir",
        init,
        "--landing-dir",
        landing,
        "--pattern",
        "sensor_data_*.json",
    )
    assert run_emitter_command(reset) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"deleted {init / 'sensor_data_1.json'}"
    assert out[-1].startswith("reset: deleted 1 file(s)") and "copied 5 file(s)" in out[-1]

    run = cli(
        "run",
        "--init-dir",
        init,
        "--landing-dir",
        landing,
        "--batch-min",
        2,
        "--batch-max",
        2,
        "--min-delay-s",
        0,
        "--max-delay-s",
        0,
        "--seed",
        1,
    )
    assert run_emitter_command(run) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "batch 1: moved 2 file(s) after 0.00s: sensor_data_98.json, sensor_data_99.json "
        "(remaining 3)",
        "batch 2: moved 2 file(s) after 0.00s: sensor_data_100.json, sensor_data_101.json "
        "(remaining 1)",
        "batch 3: moved 1 file(s) after 0.00s: sensor_data_102.json (remaining 0)",
        f"done: moved 5 file(s) in 3 batch(es); {init} is empty",
    ]
    assert visible(landing) == sorted(expected)


def test_cli_run_reports_bad_options_as_config_errors(dirs: tuple[Path, Path, Path]) -> None:
    _, init, landing = dirs
    args = cli(
        "run", "--init-dir", init, "--landing-dir", landing, "--min-delay-s", 3, "--max-delay-s", 1
    )
    with pytest.raises(ConfigError, match="--max-delay-s 1 must be at least --min-delay-s 3"):
        run_emitter_command(args)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_run_stops_cleanly_on_sigterm_and_ctrl_c(
    dirs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], signum: int
) -> None:
    _, init, landing = dirs
    expected = write_source(init, range(1, 31), lines=200)
    received: list[int] = []

    def sentinel(sig: int, _frame: FrameType | None) -> None:
        received.append(sig)  # only reached if the emitter did not install its own handler

    previous = signal.signal(signum, sentinel)

    def send_signal_after_first_file() -> None:
        deadline = time.monotonic() + 10
        while not visible(landing) and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signum)

    killer = threading.Thread(target=send_signal_after_first_file, daemon=True)
    args = cli(
        "run",
        "--init-dir",
        init,
        "--landing-dir",
        landing,
        "--batch-min",
        1,
        "--batch-max",
        1,
        "--min-delay-s",
        0.05,
        "--max-delay-s",
        0.05,
        "--seed",
        3,
    )
    try:
        with LandingWatcher(landing, expected) as watcher:
            killer.start()
            status = run_emitter_command(args)
            killer.join(timeout=10)
        assert signal.getsignal(signum) is sentinel  # the emitter put the old handler back
    finally:
        signal.signal(signum, previous)

    assert status == 0 and received == []
    assert watcher.problems == []
    landed, waiting = visible(landing), visible(init)
    assert 1 <= len(landed) < len(expected)
    assert sorted(landed + waiting) == sorted(expected)
    assert landed == sorted(natural(expected)[: len(landed)])
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (
        f"stopped: moved {len(landed)} file(s) in {len(landed)} batch(es); "
        f"{len(waiting)} left in {init}"
    )
