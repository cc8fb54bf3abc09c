"""FSQ or VQ autoencoders on Fashion-MNIST (or any image dataset): the training system's first run.

  python -m scripts.train --config configs/autoencoder.py:quantizer=fsq,levels=8-5-5-5 --workdir runs/ae

Arguments (comma-separated key=value, all optional):
  quantizer  fsq | residual_fsq | lfq | vq_maskgit | vq_plain | vq_uvim | vq_reseed   (default fsq)
  levels     FSQ levels joined by '-' (default 8-5-5-5: 1000 codes, the paper's 2^10)
  size       cpu (default: 32 filters, minutes on a 2-core CPU) | tokenizer (MaskGIT's widths)
  steps      training steps (default 1000)
Any field can then be overridden with --config.FIELD=VALUE.
"""

from __future__ import annotations

import ml_collections

from configs.common import parse_arg

SIZES = {
  "cpu": dict(filters=32, channel_multipliers=(1, 2, 2), num_res_blocks=1, norm_groups=8),
  "tokenizer": dict(filters=128, channel_multipliers=(1, 1, 2, 2, 4), num_res_blocks=2, norm_groups=32),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(
    arg, dict(quantizer="fsq", levels=(8, 5, 5, 5), size="cpu", steps=1000), dict(size=sorted(SIZES))
  )
  size = args["size"]

  c = ml_collections.ConfigDict()
  c.task = "autoencoder"
  c.seed = 0
  c.num_train_steps = args["steps"]
  c.batch_size = 64
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 250
  c.max_to_keep = 3
  # Memory: the models' activation dtype ("float32" | "bfloat16"; parameters, optimizer state, losses and
  # quantizer arithmetic stay float32) and rematerialisation of every block in the backward pass.
  c.compute_dtype = "float32"
  c.remat = False
  # Gradient accumulation: each step's gradient is the mean over this many micro-batches of batch_size /
  # accumulation_steps examples (the same update, for hosts whose memory does not hold the whole batch).
  c.accumulation_steps = 1
  # A multi-process job agrees on stopping (after SIGTERM or SIGHUP) every this many steps: a cross-host
  # collective, kept off most steps. One process checks its own flag every step.
  c.preemption_check_every_steps = 10
  c.profile_steps = ()  # (first, last): a jax.profiler trace of these train steps into WORKDIR/profile
  # MFU in the logs needs the devices' peak FLOP/s: known for TPU v4-v6e and H100/H200; > 0 sets it.
  c.peak_flops_per_device = 0.0
  c.num_eval_batches = -1  # -1: the whole evaluation split
  c.debug_nan_at_step = -1  # fault injection for tests: the batch of this step becomes NaN

  c.data = ml_collections.ConfigDict()
  c.data.name = "fashion_mnist_local"
  c.data.data_dir = "artifacts/tensorflow_datasets"
  c.data.manual_dir = ""  # folder of the four idx files; '' = the Debian package's folder
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32  # 28x28 is zero-padded to 32x32 (divisible by the 4x downsampling)
  c.data.resize_mode = "pad"  # pad (centre on zeros) | crop (resize the short side, centre crop): ImageNet
  c.data.channels = 1
  c.data.random_flip = False
  c.data.random_crop = ""  # "inception": training crops of 5-100% of the area (big_vision), before the resize
  c.data.worker_count = 0
  c.data.prefetch_buffer_size = 2
  c.data.skip_bad_examples = False  # True: skip undecodable examples, listed in WORKDIR/skipped_examples.tsv
  c.data.resident = False  # True: keep the training set on the devices, draw batches there (small data)
  c.data.tokens_dir = ""  # MaskGIT stage II: train on scripts.pretokenize's tokens ('' = encode on the fly)
  c.data.num_shards = 0  # 0: one per process; set equal across runs to compare different process counts

  c.model = ml_collections.ConfigDict(dict(SIZES[size], maskgit_shortcut_quirk=False))

  c.quantizer = ml_collections.ConfigDict()
  c.quantizer.kind = args["quantizer"]
  c.quantizer.levels = args["levels"]
  c.quantizer.num_codebooks = 1
  c.quantizer.num_stages = 2
  c.quantizer.num_bits = 10
  c.quantizer.codebook_size = 1024
  c.quantizer.vq_dim = 32

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.schedule = "cosine"
  c.optimizer.lr_multipliers = ()  # ((regex over parameter paths, factor), ...): see fsq.train.state

  # Devices on each axis (-1: the rest); parameters of at least fsdp_min_size elements are sharded over fsdp.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1, fsdp_min_size=2**18))
  return c
