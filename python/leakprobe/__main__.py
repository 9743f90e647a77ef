"""``python -m leakprobe``: the ``leakprobe`` command (docs/cli.md)."""

import sys

from .cli import main

sys.exit(main())
