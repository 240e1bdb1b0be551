@echo off
rem Shared by the .bat launch scripts: install what is missing (uv, Python deps, JVM jars).
rem Java 17 and Maven must be installed on Windows (e.g. winget install EclipseAdoptium.Temurin.17.JDK
rem Apache.Maven); Spark on Windows also needs HADOOP_HOME with winutils.exe (see docs\operations.md, "Windows").
where uv >nul 2>nul || (
  echo installing uv from PyPI...
  python -m pip install --quiet --user uv || (echo error: could not install uv & exit /b 2)
)
where java >nul 2>nul || (echo error: Java 17 is missing: install a JDK 17 and run again & exit /b 2)
where mvn >nul 2>nul || (echo error: Maven is missing: install Apache Maven and run again & exit /b 2)
pushd "%~dp0.."
uv sync --frozen --all-extras --quiet || (popd & echo error: uv sync failed & exit /b 2)
uv run --frozen --quiet iot-lakehouse deps >nul || (popd & echo error: resolving the JVM libraries failed & exit /b 2)
popd
exit /b 0
