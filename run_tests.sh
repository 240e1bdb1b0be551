#!/usr/bin/env bash
# The test command: installs what is missing, then lint (ruff), types (mypy) and the tests
# (pytest; integration tests start their own Kafka broker on free ports and stop it after).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k bronze
set -euo pipefail
source "$(dirname "$0")/scripts/lib.sh"
iot_bootstrap
iot_apt_install chromium chromium  # headless browser of tests/test_dashboard.py (Playwright)
cd "$IOT_ROOT"
echo "== ruff" && uv run --frozen ruff check src tests spark bench notebooks
echo "== mypy" && uv run --frozen mypy
echo "== pytest" && uv run --frozen pytest "$@"
