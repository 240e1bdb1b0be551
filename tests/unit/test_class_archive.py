from __future__ import annotations

from pathlib import Path

import pytest

from iot_lakehouse.errors import DependencyError
from iot_lakehouse.runtime import class_archive, jvm_deps
from iot_lakehouse.runtime.spark_session import driver_java_options
from iot_lakehouse.settings import Settings


def test_the_fingerprint_changes_with_any_jar_and_only_then(tmp_path: Path) -> None:
    java, jar = tmp_path / "bin" / "java", tmp_path / "a.jar"
    java.parent.mkdir()
    java.write_bytes(b"jvm")
    jar.write_bytes(b"classes")
    before = class_archive.fingerprint(java, [jar])
    assert class_archive.fingerprint(java, [jar]) == before
    jar.write_bytes(b"other classes")  # a new build of the same jar
    assert class_archive.fingerprint(java, [jar]) != before
    assert class_archive.fingerprint(java, []) != class_archive.fingerprint(java, [jar])


def test_a_driver_maps_the_archive_only_when_one_was_built_for_its_jars(tmp_path: Path) -> None:
    settings = Settings(jars_dir=tmp_path / "jars")
    jars = jvm_deps.resolve("spark", Settings.from_env({}).jars_dir).jars
    assert "SharedArchiveFile" not in driver_java_options(settings, jars)  # none built here
    archive = class_archive.archive_path(settings, jars)
    assert archive is not None
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"")
    assert f"-XX:SharedArchiveFile={archive}" in driver_java_options(settings, jars)
    assert "SharedArchiveFile" not in driver_java_options(settings, jars[:-1])  # other jars
    assert "-XX:+UseSerialGC" in driver_java_options(settings, jars)
    assert "-XX:+UseG1GC" in driver_java_options(settings.with_(spark_driver_gc="G1"), jars)
    naive = settings.with_(spark_tuning=False)  # the benchmark's baseline: JVM defaults
    assert driver_java_options(naive, jars) == "-Duser.timezone=UTC"
    dumping = driver_java_options(settings, jars, archive_classes_to=tmp_path / "new.jsa")
    assert f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}" in dumping
    assert "SharedArchiveFile" not in dumping


def test_an_archive_cut_short_is_refused_not_handed_to_drivers(tmp_path: Path) -> None:
    """A truncated archive crashes the JVM that maps it: the build must refuse it."""
    settings = Settings.from_env({})
    built = class_archive.archive_path(settings, jvm_deps.resolve("spark", settings.jars_dir).jars)
    assert built is not None and built.is_file(), "`iot-lakehouse deps` builds the archive"
    cut = tmp_path / "cut.jsa"
    with built.open("rb") as source:
        cut.write_bytes(source.read(1 << 20))
    java = class_archive.java_binary()
    assert java is not None
    with pytest.raises(DependencyError, match="does not load"):
        class_archive.check_loads(java, cut)
    assert not cut.exists() and not list(tmp_path.glob("hs_err_pid*.log"))
    class_archive.check_loads(java, built)  # the real one loads
