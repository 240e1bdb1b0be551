#!/usr/bin/env bash
# Start the local Kafka broker (KRaft, 127.0.0.1, no Docker) and create the topics.
# Installs what is missing on first use (uv, Python deps, jars). Settings: docs/configuration.md.
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_cli kafka start "$@"
