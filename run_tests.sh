#!/usr/bin/env bash
# The test command: installs what is missing, then lint (ruff), types (mypy) and the tests
# (pytest: tests/unit needs no real service; tests/integration and tests/faults start their own
# Kafka broker, Spark or browser and stop them after). Extra arguments go to pytest, e.g.
# ./run_tests.sh -k bronze. --quick (first): lint, types and tests/unit, in about a minute.
set -euo pipefail
quick=()
if [[ "${1:-}" == "--quick" ]]; then
  shift
  quick=(tests/unit)
fi
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
if [[ ${#quick[@]} -eq 0 ]]; then
  iot_apt_install chromium chromium  # headless browser of the dashboard's integration test
fi
cd "$IOT_ROOT"
echo "== ruff" && uv run --frozen ruff check src tests spark bench notebooks
echo "== mypy" && uv run --frozen mypy
echo "== pytest" && uv run --frozen pytest "${quick[@]}" "$@"
