"""``python -m benchmarks``: see benchmarks/harness.py and docs/benchmarks.md."""

import sys

from .harness import main

sys.exit(main())
