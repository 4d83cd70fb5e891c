"""The command lines: ``python -m worm_tune.run``, ``.sweep`` and ``.final``."""
