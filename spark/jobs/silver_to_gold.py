"""silver -> gold: 5-minute and sliding window aggregates and location stats.

Launch (from the project root):

    uv run python spark/jobs/silver_to_gold.py [--available-now]

which is the same as ``uv run iot-lakehouse run gold [--available-now]`` and
``./start_gold.sh``. Settings come from environment variables (docs/configuration.md).
"""

from __future__ import annotations

import sys

from iot_lakehouse.interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "gold", *sys.argv[1:]]))
