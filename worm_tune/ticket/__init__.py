"""The method: masks, the Early-Bird detector, mask sites, WORM truncation, pruning, accounting."""
