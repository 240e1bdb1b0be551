"""``python -m iot_lakehouse``: the same as the ``iot-lakehouse`` command."""

from __future__ import annotations

import sys

from iot_lakehouse.interfaces.cli import main

sys.exit(main())
