"""Turn a worm_tune sweep into paired comparisons, tables and plots: ``python -m analysis <sweep>``."""
