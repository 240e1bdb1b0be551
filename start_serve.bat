@echo off
rem See start_serve.sh: same command, for Windows.
call "%~dp0scripts\bootstrap.bat" || exit /b 2
pushd "%~dp0"
uv run --frozen --quiet iot-lakehouse run serve %*
set RC=%ERRORLEVEL%
popd
exit /b %RC%
