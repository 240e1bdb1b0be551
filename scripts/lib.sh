# Shared by the launch scripts: find the project, install what is missing, then run the CLI.
# Sourced, not executed.  Installs: uv (from PyPI), Java 17 and Maven (Debian packages, only if
# missing), the Python environment (uv sync --frozen) and the JVM jars (iot-lakehouse deps).

IOT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.local/bin:$PATH"

iot_die() { echo "error: $*" >&2; exit 2; }

iot_apt_install() {  # iot_apt_install <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (provides $1)..." >&2
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || iot_die "$1 is missing; install the package $2 and run again"
    sudo="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || iot_die "$1 is missing and there is no apt-get; install $2 by hand"
  if [ -z "${IOT_APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq >&2 || iot_die "apt-get update failed; install $2 by hand"
    IOT_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >&2 \
    || iot_die "could not install $2; install it by hand and run again"
}

iot_bootstrap() {
  if ! command -v uv >/dev/null 2>&1; then
    echo "installing uv from PyPI..." >&2
    python3 -m pip install --quiet --user uv 2>/dev/null \
      || python3 -m pip install --quiet --user --break-system-packages uv 2>/dev/null \
      || python3 -m pip install --quiet uv \
      || iot_die "could not install uv; install it (pip install uv) and run again"
    command -v uv >/dev/null 2>&1 || iot_die "uv was installed but is not on PATH; add ~/.local/bin to PATH"
  fi
  iot_apt_install java openjdk-17-jre-headless
  iot_apt_install mvn maven
  (cd "$IOT_ROOT" && uv sync --frozen --all-extras --quiet) || iot_die "uv sync failed (see above)"
  (cd "$IOT_ROOT" && uv run --frozen --quiet iot-lakehouse deps >/dev/null) \
    || iot_die "resolving the JVM libraries failed (see above)"
}

# --- pid records: stop_all.sh stops these processes and nothing else -------------------------
# A record is <runtime>/pids/<pid>.pid with pid=, started= (the process's start time, which a
# reused pid does not share), match= (text its command line must contain) and role= (main, or
# child for a process `all` started). Relative IOT_RUNTIME_DIR: from the project root, as in the
# Python settings.

iot_pids_dir() { echo "${IOT_RUNTIME_DIR:-$IOT_ROOT/.runtime}/pids"; }

iot_proc_started() {  # iot_proc_started <pid>: its start time, empty if it is gone (or a zombie)
  local stat
  if [ -d /proc/self ]; then
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"  # drop "pid (comm) ": the comm may hold spaces and parentheses
    # shellcheck disable=SC2086
    set -- $stat
    [ "$1" = Z ] || echo "${20}"  # field 22 of the stat line: start time, ticks since boot
  else
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in '' | *Z*) return 0 ;; esac
    ps -o lstart= -p "$1" 2>/dev/null | tr -s ' ' | sed 's/^ //; s/ $//'
  fi
}

iot_proc_args() {  # iot_proc_args <pid>: its command line, empty if no such process
  if [ -d /proc/self ]; then
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
  else
    ps -o args= -p "$1" 2>/dev/null
  fi
}

iot_record_pid() {  # iot_record_pid <pid> <match>: record a process stop_all.sh may stop
  local dir started
  dir="$(iot_pids_dir)"
  started="$(iot_proc_started "$1")"
  [ -n "$started" ] || return 0
  { mkdir -p "$dir" \
    && printf 'pid=%s\nstarted=%s\nmatch=%s\nrole=main\n' "$1" "$started" "$2" >"$dir/.$1.tmp" \
    && mv -f "$dir/.$1.tmp" "$dir/$1.pid"; } 2>/dev/null \
    || echo "warning: could not record pid $1 in $dir; stop_all.sh will not stop it" >&2
}

iot_cli() {  # run the CLI from the project root (services: recorded for stop_all.sh)
  cd "$IOT_ROOT" || iot_die "cannot enter $IOT_ROOT"
  case "${1:-}" in  # exec keeps the pid: the record names the uv process, which forwards SIGTERM
    run | generate | all | emitter) iot_record_pid "${BASHPID:-$$}" "iot-lakehouse $1" ;;
  esac
  exec uv run --frozen --quiet iot-lakehouse "$@"
}
