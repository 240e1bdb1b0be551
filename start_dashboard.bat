@echo off
rem See start_dashboard.sh: same command, for Windows.
call "%~dp0scripts\bootstrap.bat" || exit /b 2
pushd "%~dp0"
uv run --frozen --quiet iot-lakehouse dashboard %*
set RC=%ERRORLEVEL%
popd
exit /b %RC%
