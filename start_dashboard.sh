#!/usr/bin/env bash
# The live web dashboard on http://127.0.0.1:8501 (DASHBOARD_PORT, or --port N); Ctrl-C stops it.
# Installs what is missing on first use (uv, Python deps, jars). Settings: docs/configuration.md.
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_cli dashboard "$@"
