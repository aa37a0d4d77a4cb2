"""``python -m flow.cli``: the same as the ``flow`` console script."""

import sys

from flow.cli.app import main

sys.exit(main())
