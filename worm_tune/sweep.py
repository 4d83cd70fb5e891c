"""``python -m worm_tune.sweep``: see :mod:`worm_tune.cli.sweep`."""

import sys

from worm_tune.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
