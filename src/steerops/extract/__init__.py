"""Activation extraction: trait examples or task sets -> pooled activations on disk."""
