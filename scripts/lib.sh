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
  (cd "$IOT_ROOT" && uv sync --frozen --quiet) || iot_die "uv sync failed (see above)"
  (cd "$IOT_ROOT" && uv run --frozen --quiet iot-lakehouse deps >/dev/null) \
    || iot_die "resolving the JVM libraries failed (see above)"
}

iot_cli() {  # run the CLI from the project root
  cd "$IOT_ROOT" && exec uv run --frozen --quiet iot-lakehouse "$@"
}
