from __future__ import annotations

from pathlib import Path

import pytest

from iot_lakehouse.errors import DependencyError
from iot_lakehouse.runtime import jvm_deps
from iot_lakehouse.settings import Settings


def test_artifact_name_drops_versions() -> None:
    assert jvm_deps.artifact_name("jackson-core-2.13.5.jar") == "jackson-core"
    assert jvm_deps.artifact_name("zstd-jni-1.5.7-3.jar") == "zstd-jni"
    assert (
        jvm_deps.artifact_name("spark-sql-kafka-0-10_2.13-4.2.0.jar") == "spark-sql-kafka-0-10_2.13"
    )
    assert jvm_deps.artifact_name("delta-spark_4.2_2.13-4.4.0.jar") == "delta-spark_4.2_2.13"


def test_spark_jars_match_installed_pyspark_and_are_not_duplicated() -> None:
    jars = jvm_deps.resolve("spark", Settings.from_env({}).jars_dir)
    names = [p.name for p in jars.jars]
    version = jars.properties["spark.version"]
    assert f"spark-sql-kafka-0-10_2.13-{version}.jar" in names
    assert any(
        n.startswith(f"delta-spark_{jars.properties['spark.binary.version']}_2.13-") for n in names
    )
    shipped = {jvm_deps.artifact_name(p.name) for p in jvm_deps.pyspark_jars_dir().glob("*.jar")}
    assert not [n for n in names if jvm_deps.artifact_name(n) in shipped]


def test_unreachable_repository_and_empty_cache_gives_clear_error(tmp_path: Path) -> None:
    settings_xml = tmp_path / "settings.xml"
    settings_xml.write_text(f"""<settings>
  <localRepository>{tmp_path / "m2"}</localRepository>
  <mirrors><mirror><id>nowhere</id><mirrorOf>*</mirrorOf>
    <url>http://127.0.0.1:9/maven2</url></mirror></mirrors>
</settings>""")
    with pytest.raises(DependencyError) as info:
        jvm_deps.resolve("kafka", tmp_path / "jars", settings_xml)
    message = str(info.value)
    assert "Could not resolve the kafka JVM libraries" in message
    assert "could not be reached and nothing is cached" in message
    assert not (tmp_path / "jars" / "kafka").exists()


def offline_maven_settings(tmp_path: Path) -> Path:
    """The project's Maven settings, offline: resolve from the local repository (filled by
    `deps`) only. Same mirror id, so Maven trusts what that mirror downloaded."""
    project = jvm_deps.maven_settings_file().read_text()
    settings_xml = tmp_path / "offline-settings.xml"
    settings_xml.write_text(project.replace("<mirrors>", "<offline>true</offline>\n  <mirrors>"))
    return settings_xml


def user_folder(folder: Path) -> dict[str, bytes]:
    """A folder someone else owns (say /opt/kafka), with files that must survive."""
    (folder / "bin").mkdir(parents=True)
    files = {"bin/kafka-server-start.sh": b"#!/bin/sh\n", "libs/kafka_2.13-3.9.0.jar": b"PK"}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


@pytest.mark.parametrize("folder", ["kafka", ".kafka.partial"])
def test_a_folder_the_project_did_not_make_is_never_deleted(tmp_path: Path, folder: str) -> None:
    # IOT_JARS_DIR=/opt with a user's /opt/kafka: resolving again (force, or a new version)
    # used to rmtree it. Now nothing is resolved and nothing is touched.
    jars_dir = tmp_path / "opt"
    files = user_folder(jars_dir / folder)
    try:
        jvm_deps.resolve("kafka", jars_dir, offline_maven_settings(tmp_path), force=True)
        message = "resolved without a word"
    except DependencyError as exc:
        message = str(exc)
    left = {
        n: (jars_dir / folder / n).read_bytes() for n in files if (jars_dir / folder / n).exists()
    }
    assert left == files, f"the user's files were deleted ({message})"
    assert "\n" not in message
    assert f"{jars_dir / folder} exists and was not made by iot-lakehouse" in message
    assert "IOT_JARS_DIR" in message
    assert sorted(p.name for p in jars_dir.iterdir()) == [folder]


def test_a_folder_it_made_is_replaced_old_caches_included(tmp_path: Path) -> None:
    jars_dir, settings_xml = tmp_path / "jars", offline_maven_settings(tmp_path)
    first = jvm_deps.resolve("kafka", jars_dir, settings_xml)
    assert (first.directory / jvm_deps.OWNER_MARKER).is_file()
    assert jvm_deps.made_by_project(first.directory)
    (first.directory / "stale-1.0.jar").write_bytes(b"PK")
    again = jvm_deps.resolve("kafka", jars_dir, settings_xml, force=True)
    assert not (again.directory / "stale-1.0.jar").exists()
    assert [p.name for p in again.jars] == [p.name for p in first.jars]
    # A cache made before the marker existed: exactly the manifest and the jars it lists.
    (again.directory / jvm_deps.OWNER_MARKER).unlink()
    assert jvm_deps.made_by_project(again.directory)
    assert jvm_deps.resolve("kafka", jars_dir, settings_xml).jars == again.jars
    (again.directory / "notes.txt").write_text("someone else's file")
    assert not jvm_deps.made_by_project(again.directory)
    with pytest.raises(DependencyError, match="was not made by iot-lakehouse"):
        jvm_deps.resolve("kafka", jars_dir, settings_xml)
    assert (again.directory / "notes.txt").exists()
