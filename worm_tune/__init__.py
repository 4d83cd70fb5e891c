"""worm_tune: Early-Bird ticket search and WORM gradient truncation, as sweepable trials."""

__version__ = "0.1.0"
