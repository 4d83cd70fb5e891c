"""The errors that mean the user's input was wrong: every sweep-reading command reports them as
one line with exit code 2 (``sweep``, ``final`` and ``python -m analysis`` alike)."""

from __future__ import annotations

from worm_tune.config import ConfigError
from worm_tune.paths import PathError
from worm_tune.tune.spaces import SpaceError
from worm_tune.tune.store import TrackingError

#: Bad input found before the machinery is imported. The machinery's own (a missing dataset or
#: weights, a cluster that cannot be joined) become :class:`~worm_tune.usage.UsageError` there.
USAGE_ERRORS = (ConfigError, PathError, SpaceError, TrackingError)
