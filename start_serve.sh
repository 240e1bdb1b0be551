#!/usr/bin/env bash
# Run the serving job (gold/alerts and silver -> MongoDB) (--available-now to drain and exit).
# Installs what is missing on first use (uv, Python deps, jars). Settings: docs/configuration.md.
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_cli run serve "$@"
