"""``python -m storey``: the `storey` console script."""

import sys

from storey.cli import main

sys.exit(main())
