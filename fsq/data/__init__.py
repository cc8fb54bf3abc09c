"""Datasets: offline readers and (later) TFDS builders and Grain pipelines."""

from fsq.extras import require

require("train", "fsq.data")
