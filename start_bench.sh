#!/usr/bin/env bash
# The benchmarks, side by side in one run (private broker, temporary lakehouses): Kafka and
# Spark ceilings, G1 sustained throughput, G2/G3 latency, G4 replay, G5 cold start, memory,
# each tuned vs a naive baseline. Prints a table and writes bench/results/<timestamp>.json.
# --quick: 1-minute windows (~25 min instead of ~1.5 h). Installs what is missing first.
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_cli bench "$@"
