"""bronze -> silver: parse, validate (rules file), deduplicate; rejects to the DLQ.

Launch (from the project root):

    uv run python spark/jobs/bronze_to_silver.py [--available-now]

which is the same as ``uv run iot-lakehouse run silver [--available-now]`` and
``./start_silver.sh``. Settings come from environment variables (docs/configuration.md).
"""

from __future__ import annotations

import sys

from iot_lakehouse.interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "silver", *sys.argv[1:]]))
