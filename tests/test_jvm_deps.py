from __future__ import annotations

from pathlib import Path

import pytest

from iot_lakehouse import jvm_deps
from iot_lakehouse.errors import DependencyError
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
