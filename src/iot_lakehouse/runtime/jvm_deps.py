"""JVM libraries from Maven Central, resolved once into a local cache and used offline after.

Two sets, each described by a POM shipped in ``iot_lakehouse/jvm/``:

- ``spark``: Delta Lake for Spark 4.2 / Scala 2.13 and ``spark-sql-kafka-0-10`` at exactly the
  installed pyspark version, minus every jar the pyspark wheel already ships.
- ``kafka``: the Apache Kafka 4.x broker (KRaft) with its runtime dependencies.

Resolution runs ``mvn dependency:copy-dependencies`` once; a manifest records what was resolved
so later starts need neither Maven nor the network.

``IOT_JARS_DIR`` may point anywhere, so a folder is only ever deleted (to resolve again) if this
module made it: it writes an ownership marker into every folder it creates, and refuses to touch
a ``spark``/``kafka`` folder it finds there without one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from importlib.resources import files
from pathlib import Path

from iot_lakehouse.errors import DependencyError
from iot_lakehouse.logs import kv

logger = logging.getLogger(__name__)

KAFKA_BROKER_VERSION = "4.2.0"
# Published releases of spark-token-provider-kafka-0-10 (a small helper jar of the Kafka
# connector) lag behind Spark on some mirrors of Maven Central; if the exact version is missing
# we fall back to this one, which is API-compatible, and say so in the log.
TOKEN_PROVIDER_FALLBACK = "4.0.0"
MANIFEST = "resolved.json"
# Written into every folder resolve() creates; a folder without it is never deleted.
OWNER_MARKER = ".made-by-iot-lakehouse"
RESOLVER_REVISION = "2"  # bump when the way jars are picked changes: forces a new resolution
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_JAR_VERSION = re.compile(r"-\d[0-9A-Za-z.]*(?:-[0-9A-Za-z.]+)?\.jar$")


@dataclass(frozen=True)
class JarSet:
    """One resolved set of jars: its name, folder and the properties it was resolved with."""

    name: str
    directory: Path
    properties: dict[str, str]

    @property
    def jars(self) -> list[Path]:
        return sorted(self.directory.glob("*.jar"))


def _pom(name: str) -> Path:
    return Path(str(files("iot_lakehouse") / "jvm" / name / "pom.xml"))


def maven_settings_file() -> Path:
    """The Maven settings routing every repository to Maven Central (see the file's comment)."""
    return Path(str(files("iot_lakehouse") / "jvm" / "maven-settings.xml"))


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def spark_properties() -> dict[str, str]:
    """Versions the Spark jar set must match: the installed pyspark and delta-spark."""
    spark_version = metadata.version("pyspark")
    major_minor = ".".join(spark_version.split(".")[:2])
    return {
        "spark.version": spark_version,
        "spark.binary.version": major_minor,
        "delta.version": metadata.version("delta-spark"),
    }


def kafka_properties() -> dict[str, str]:
    return {"kafka.version": KAFKA_BROKER_VERSION}


def artifact_name(jar_file_name: str) -> str:
    """``jackson-core-2.13.5.jar`` -> ``jackson-core`` (drop the version and extension)."""
    return _JAR_VERSION.sub("", jar_file_name)


def _fingerprint(name: str, properties: dict[str, str]) -> str:
    pom = _pom(name).read_bytes()
    blob = pom + json.dumps(properties, sort_keys=True).encode() + RESOLVER_REVISION.encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _read_manifest(directory: Path) -> dict[str, object] | None:
    try:
        recorded = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def made_by_project(folder: Path) -> bool:
    """True if ``folder`` is a jar folder ``resolve`` made: a real folder holding its ownership
    marker, or (a cache from before the marker) exactly the manifest and the jars it lists."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if (folder / OWNER_MARKER).is_file():
        return True
    recorded = _read_manifest(folder)
    if recorded is None or "fingerprint" not in recorded:
        return False
    jars = recorded.get("jars")
    if not isinstance(jars, list):
        return False
    return {p.name for p in folder.iterdir()} == {MANIFEST, *map(str, jars)}


def _refuse_foreign(folder: Path) -> None:
    """Raise if ``folder`` exists (even as a broken link) and ``resolve`` did not make it."""
    if (folder.exists() or folder.is_symlink()) and not made_by_project(folder):
        raise DependencyError(
            f"{folder} exists and was not made by iot-lakehouse, so it is left alone; set "
            f"IOT_JARS_DIR to a new or empty folder of its own (default .runtime/jars) or move "
            f"{folder} away"
        )


def _remove_own(folder: Path) -> None:
    """Delete ``folder`` if it exists, only if ``resolve`` made it (see ``_refuse_foreign``)."""
    _refuse_foreign(folder)
    if folder.exists():
        shutil.rmtree(folder)


def _new_own_folder(folder: Path) -> None:
    """Make ``folder`` afresh (replacing one of ours) with the ownership marker in it."""
    _remove_own(folder)
    folder.mkdir(parents=True)
    (folder / OWNER_MARKER).write_text(
        "Made by iot-lakehouse (jvm_deps.resolve); it may delete and re-create this folder.\n"
    )


def _cached(directory: Path, fingerprint: str) -> bool:
    recorded = _read_manifest(directory)
    return bool(
        recorded is not None
        and recorded.get("fingerprint") == fingerprint
        and made_by_project(directory)
        and any(directory.glob("*.jar"))
    )


def _run_maven(name: str, properties: dict[str, str], out: Path, settings_file: Path) -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DependencyError(
            "Maven (mvn) is not installed, and the JVM libraries are not cached in "
            f"{out.parent}. Install it (Debian/Ubuntu: apt-get install -y maven) or run "
            "./start_all.sh / ./run_tests.sh, which install it."
        )
    cmd = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-s",
        str(settings_file),
        "-f",
        str(_pom(name)),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out.resolve()}",
        *[f"-D{key}={value}" for key, value in properties.items()],
    ]
    logger.info("resolving JVM libraries %s", kv(set=name, into=out, **properties))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return "" if proc.returncode == 0 else (proc.stdout + proc.stderr)


def _explain_maven_failure(name: str, output: str) -> DependencyError:
    errors = [line for line in output.splitlines() if "[ERROR]" in line][:3]
    detail = "\n  ".join(errors) or output.strip()[-800:]
    offline = any(
        s in output
        for s in (
            "Unknown host",
            "Connection refused",
            "timed out",
            "Network is unreachable",
            "transfer failed",
            "Could not transfer",
            "No plugin found",
            "Connect to",
        )
    )
    hint = (
        "Maven Central could not be reached and nothing is cached. Connect to the network "
        "(or set IOT_MAVEN_SETTINGS to a settings.xml with your mirror) and run "
        "`iot-lakehouse deps` once; after that the jars are used offline."
        if offline
        else "Maven could not resolve the libraries. Check the versions in pyproject.toml "
        "(pyspark and delta-spark must be a supported pair) and run `iot-lakehouse deps` again."
    )
    return DependencyError(f"Could not resolve the {name} JVM libraries:\n  {detail}\n{hint}")


def resolve(
    name: str, jars_dir: Path, settings_file: Path | None = None, force: bool = False
) -> JarSet:
    """Resolve jar set ``name`` ("spark" or "kafka") into ``jars_dir/name`` unless cached.

    Folders under ``jars_dir`` that this function did not make are never deleted: finding one
    where it would write raises DependencyError before anything is resolved.
    """
    if name not in {"spark", "kafka"}:
        raise ValueError(f"unknown jar set {name!r}")
    properties = spark_properties() if name == "spark" else kafka_properties()
    out = jars_dir / name
    fingerprint = _fingerprint(name, properties)
    if not force and _cached(out, fingerprint):
        return JarSet(name, out, _recorded_properties(out))
    _refuse_foreign(out)  # before a slow resolution whose result could not be put in place
    settings_file = settings_file or maven_settings_file()
    staging = jars_dir / f".{name}.partial"
    _new_own_folder(staging)
    failure = _run_maven(name, properties, staging, settings_file)
    if failure and name == "spark" and "spark-token-provider-kafka" in failure:
        logger.warning(
            "spark-token-provider-kafka %s is not in the repository; using %s %s",
            properties["spark.version"],
            TOKEN_PROVIDER_FALLBACK,
            kv(reason="missing_on_mirror", connector=properties["spark.version"]),
        )
        properties = {**properties, "token.provider.version": TOKEN_PROVIDER_FALLBACK}
        _new_own_folder(staging)
        failure = _run_maven(name, properties, staging, settings_file)
    if failure:
        _remove_own(staging)
        raise _explain_maven_failure(name, failure)
    if name == "spark":
        _drop_jars_shipped_by_pyspark(staging)
    (staging / MANIFEST).write_text(
        json.dumps(
            {
                "fingerprint": fingerprint,
                "properties": properties,
                "jars": sorted(p.name for p in staging.glob("*.jar")),
            },
            indent=2,
        )
    )
    _remove_own(out)
    staging.rename(out)
    logger.info("resolved JVM libraries %s", kv(set=name, jars=len(list(out.glob("*.jar")))))
    return JarSet(name, out, properties)


def _recorded_properties(directory: Path) -> dict[str, str]:
    recorded = json.loads((directory / MANIFEST).read_text())
    return dict(recorded.get("properties", {}))


def _drop_jars_shipped_by_pyspark(directory: Path) -> None:
    """Keep one copy of each library on the classpath: the pyspark wheel's wins."""
    shipped = {artifact_name(p.name) for p in pyspark_jars_dir().glob("*.jar")}
    for jar in directory.glob("*.jar"):
        if artifact_name(jar.name) in shipped:
            jar.unlink()
