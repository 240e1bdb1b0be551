#!/usr/bin/env bash
# The benchmarks, side by side in one run (private broker, temporary lakehouses): Kafka and
# Spark ceilings, G1 sustained throughput, G2/G3 latency, G4 replay, G5 cold start, memory,
# each tuned vs a naive baseline, and a soak (10,000 sensors, 30 min, then reconcile). Prints a
# table and writes bench/results/<timestamp>.json. --quick: 1-minute windows and a 5-minute soak
# (~50 min instead of 2.5 h or more). --only soak runs the soak alone. Installs what is missing.
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_cli bench "$@"
