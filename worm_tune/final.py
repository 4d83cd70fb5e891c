"""``python -m worm_tune.final``: see :mod:`worm_tune.cli.final`."""

import sys

from worm_tune.cli.final import main

if __name__ == "__main__":
    sys.exit(main())
