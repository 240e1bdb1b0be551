@echo off
rem See start_silver.sh: same command, for Windows.
call "%~dp0scripts\bootstrap.bat" || exit /b 2
pushd "%~dp0"
uv run --frozen --quiet iot-lakehouse run silver %*
set RC=%ERRORLEVEL%
popd
exit /b %RC%
