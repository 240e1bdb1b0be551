"""silver -> gold/alerts (+ Kafka iot-alerts) and gold/alert_counts_5m: the alerts job.

Launch (from the project root):

    uv run python spark/jobs/silver_to_alerts.py [--available-now]

which is the same as ``uv run iot-lakehouse run alerts [--available-now]`` and
``./start_alerts.sh``. Settings come from environment variables (docs/configuration.md);
detector thresholds from ``src/iot_lakehouse/rules/alert_rules.yml`` (ALERT_RULES_FILE).
"""

from __future__ import annotations

import sys

from iot_lakehouse.interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "alerts", *sys.argv[1:]]))
