"""Checkpoint, model and data loading."""
