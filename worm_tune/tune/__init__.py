"""Sweeps on Ray Tune: search spaces, plans, the MLflow store, trainables, the runner."""
