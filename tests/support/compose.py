"""Helpers the compose tests of tests/integration and tests/unit share."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "iot-lakehouse.json"
