#!/usr/bin/env bash
# Broker, generator and every job with a live status line (--duration N to stop after N s).
# Installs what is missing on first use (uv, Python deps, jars). Settings: docs/configuration.md.
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_cli all "$@"
