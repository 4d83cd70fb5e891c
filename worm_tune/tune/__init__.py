"""Sweeps on Ray Tune: sweep spaces, plans, the MLflow store, trainables, the runner."""
