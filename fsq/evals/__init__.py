"""Evaluation networks and metrics (FID's InceptionV3)."""

from fsq.extras import require

require("train", "fsq.evals")
require("eval", "fsq.evals")
