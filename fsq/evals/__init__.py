"""Evaluation networks and metrics (FID's InceptionV3)."""
