#!/usr/bin/env bash
# Stop what start_*.sh started: the generator, the emitter and the jobs (gracefully), then the
# local broker.
set -uo pipefail
source "$(dirname "$0")/scripts/lib.sh"
cd "$IOT_ROOT"
for pattern in "iot_lakehouse generate" "iot-lakehouse generate" "iot_lakehouse emitter" "iot-lakehouse emitter" "iot_lakehouse run" "iot-lakehouse run" "iot-lakehouse all" "iot_lakehouse all"; do
  pkill -TERM -f "$pattern" 2>/dev/null && echo "sent SIGTERM to: $pattern"
done
sleep 2
uv run --frozen --quiet iot-lakehouse kafka stop
