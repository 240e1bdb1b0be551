#!/usr/bin/env bash
# Stop what this checkout started: the processes the start_*.sh scripts and `all` recorded under
# .runtime/pids (IOT_RUNTIME_DIR) get SIGTERM (jobs stop their queries gracefully), then the
# local broker stops. A record is only acted on while its pid still runs the recorded command
# (same start time, same command): other checkouts, test runs and reused pids are left alone.
set -uo pipefail
source "$(dirname "$0")/scripts/lib.sh"
cd "$IOT_ROOT" || exit 2
PIDS_DIR="$(iot_pids_dir)"
STOP_WAIT_S=90  # `all` gives its jobs 60 s to stop, then stops the broker it started

record_field() {  # record_field <file> <key>
  sed -n "s/^$2=//p" "$1" | head -n 1
}

live_pid() {  # live_pid <record>: its pid if that process is the one recorded; drops stale records
  local file=$1 pid started match
  pid="$(record_field "$file" pid)"
  started="$(record_field "$file" started)"
  match="$(record_field "$file" match)"
  case "$pid" in '' | *[!0-9]*) rm -f "$file"; return 1 ;; esac
  if [ -z "$started" ] || [ -z "$match" ] || [ "$(iot_proc_started "$pid")" != "$started" ]; then
    rm -f "$file"  # exited, or its pid now belongs to another process (or not a record)
    return 1
  fi
  case "$(iot_proc_args "$pid")" in
    *"$match"*) echo "$pid" ;;
    *) echo "left pid $pid alone: it does not run '$match' (yet?)" >&2; return 1 ;;
  esac
}

stop_recorded() {  # stop_recorded main|child: SIGTERM the live records of that role, wait for them
  local role=$1 file pid waited=0
  local -a files=()
  for file in "$PIDS_DIR"/*.pid; do
    [ -e "$file" ] || continue
    [ "$(record_field "$file" role)" = "$role" ] || continue
    pid="$(live_pid "$file")" || continue
    kill -TERM "$pid" 2>/dev/null \
      && echo "sent SIGTERM to pid $pid ($(record_field "$file" match))" \
      && files+=("$file")
  done
  [ "${#files[@]}" -gt 0 ] || return 0
  while [ "$waited" -lt "$STOP_WAIT_S" ]; do
    local running=0
    for file in "${files[@]}"; do
      [ -e "$file" ] && live_pid "$file" >/dev/null 2>&1 && running=1
    done
    [ "$running" = 0 ] && return 0
    sleep 1
    waited=$((waited + 1))
  done
  for file in "${files[@]}"; do
    [ -e "$file" ] && pid="$(live_pid "$file" 2>/dev/null)" \
      && echo "pid $pid still running after ${STOP_WAIT_S} s; stop it yourself" >&2
  done
  return 1
}

status=0
stop_recorded main || status=1
stop_recorded child || status=1  # jobs whose `all` died without stopping them
stop_recorded service || status=1  # the local MongoDB server, after the jobs that write to it

# The broker: its pid file is this checkout's; act on it only if that pid runs this broker.
RUNTIME="$(dirname "$PIDS_DIR")"
broker_pid="$(cat "$RUNTIME/kafka/broker.pid" 2>/dev/null)"
if [ -n "$broker_pid" ] && [ -n "$(iot_proc_started "$broker_pid")" ]; then
  config="$(cd "$RUNTIME/kafka" 2>/dev/null && pwd -P)/server.properties"
  case "$(iot_proc_args "$broker_pid")" in
    *"kafka.Kafka $config"*) ;;
    *)
      echo "left pid $broker_pid alone: it is not this checkout's broker" \
        "(stale $RUNTIME/kafka/broker.pid removed)" >&2
      rm -f "$RUNTIME/kafka/broker.pid"
      ;;
  esac
fi
uv run --frozen --quiet iot-lakehouse kafka stop || status=1
exit "$status"
