#!/usr/bin/env bash
# The test command: installs what is missing, then lint (ruff), types (mypy) and the tests
# (pytest; integration tests start their own Kafka broker on free ports and stop it after).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k bronze. --quick (first): lint, types and
# the tests that need no real service (no JVM, broker or browser), in a few minutes.
set -euo pipefail
quick=()
if [[ "${1:-}" == "--quick" ]]; then
  shift
  quick=(-m "not integration")
fi
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
if [[ ${#quick[@]} -eq 0 ]]; then
  iot_apt_install chromium chromium  # headless browser of tests/test_dashboard.py (Playwright)
fi
cd "$IOT_ROOT"
echo "== ruff" && uv run --frozen ruff check src tests spark bench notebooks
echo "== mypy" && uv run --frozen mypy
echo "== pytest" && uv run --frozen pytest "${quick[@]}" "$@"
