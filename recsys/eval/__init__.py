"""Evaluation: full-catalogue ranking and metrics. Takes score tensors, never a model."""
