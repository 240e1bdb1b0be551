"""Kafka -> bronze: every record of topic ``iot-sensors`` into ``bronze/sensor_events`` (Delta).

Launch (from the project root):

    uv run python spark/jobs/kafka_to_bronze.py [--available-now]

which is the same as ``uv run iot-lakehouse run bronze [--available-now]`` and
``./start_bronze.sh``.
Settings come from environment variables (docs/configuration.md).
"""

from __future__ import annotations

import sys

from iot_lakehouse.interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "bronze", *sys.argv[1:]]))
