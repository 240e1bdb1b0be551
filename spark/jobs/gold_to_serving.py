"""gold/alerts and silver -> MongoDB: the serving job (alerts, sensor_latest).

Launch (from the project root):

    uv run python spark/jobs/gold_to_serving.py [--available-now]

which is the same as ``uv run iot-lakehouse run serve [--available-now]`` and
``./start_serve.sh``. Settings come from environment variables (docs/configuration.md).
"""

from __future__ import annotations

import sys

from iot_lakehouse.interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "serve", *sys.argv[1:]]))
