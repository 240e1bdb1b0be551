#!/usr/bin/env bash
# Produce sensor readings to Kafka (see: ./start_generator.sh --help).
# Installs what is missing on first use (uv, Python deps, jars). Settings: docs/configuration.md.
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_cli generate "$@"
