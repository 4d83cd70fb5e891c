"""``python -m worm_tune`` is ``python -m worm_tune.run``."""

import sys

from worm_tune.cli.run import main

sys.exit(main())
