"""The method: the methods and how their r evolves, a trial's phases and search decisions, masks, the
Early-Bird detector, mask sites, WORM truncation, pruning, accounting."""
