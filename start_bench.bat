@echo off
rem See start_bench.sh: same command, for Windows.
call "%~dp0scripts\bootstrap.bat" || exit /b 2
pushd "%~dp0"
uv run --frozen --quiet iot-lakehouse bench %*
set RC=%ERRORLEVEL%
popd
exit /b %RC%
