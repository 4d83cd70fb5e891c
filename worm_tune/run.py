"""``python -m worm_tune.run``: see :mod:`worm_tune.cli.run`."""

import sys

from worm_tune.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
