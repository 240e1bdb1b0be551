#!/usr/bin/env bash
# Run the alerts streaming job (silver -> gold/alerts, Kafka iot-alerts, alert counts) (--available-now to drain and exit).
# Installs what is missing on first use (uv, Python deps, jars). Settings: docs/configuration.md.
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_cli run alerts "$@"
