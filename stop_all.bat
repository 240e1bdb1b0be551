@echo off
rem Stop the local broker (jobs and generator: Ctrl-C in their windows).
pushd "%~dp0"
uv run --frozen --quiet iot-lakehouse kafka stop
popd
