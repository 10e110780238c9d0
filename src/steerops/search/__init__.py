"""Optuna search of steering coefficients under a coherence constraint (`steerops search`)."""
