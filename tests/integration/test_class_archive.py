from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iot_lakehouse.runtime import class_archive, jvm_deps
from iot_lakehouse.settings import Settings


@pytest.mark.integration  # starts a JVM, broker, browser or kernel
def test_a_job_driver_loads_spark_and_delta_from_the_archive_deps_built(tmp_path: Path) -> None:
    """The bootstrap (`iot-lakehouse deps`) built the archive; a driver started by
    build_spark must load its classes from it, not from the jars."""
    settings = Settings.from_env({})
    jars = jvm_deps.resolve("spark", settings.jars_dir).jars
    archive = class_archive.archive_path(settings, jars)
    assert archive is not None and archive.is_file(), (
        f"no class archive at {archive}: `iot-lakehouse deps` builds it"
    )
    code = (
        "from iot_lakehouse.settings import Settings\n"
        "from iot_lakehouse.runtime.spark_session import build_spark\n"
        "spark = build_spark(Settings.from_env({}).with_(spark_master='local[1]'), 'cds-test')\n"
        f"spark.range(3).write.format('delta').save({str(tmp_path / 't')!r})\n"
        "spark.stop()\n"
    )
    log = tmp_path / "classes-%p.log"
    env = {**os.environ, "JDK_JAVA_OPTIONS": f"-Xlog:class+load=info:file={log}"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = "\n".join(p.read_text() for p in tmp_path.glob("classes-*.log"))
    for name in ("org.apache.spark.SparkContext", "org.apache.spark.sql.delta.DeltaLog"):
        assert f"{name} source: shared objects file (top)" in loaded, f"{name} not from archive"
