"""Training: the generic loop, its state, checkpoints, meshes and input (the [train] extra)."""

from fsq.extras import require

require("train", "fsq.train")
