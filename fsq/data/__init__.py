"""Datasets: offline readers and (later) TFDS builders and Grain pipelines."""
