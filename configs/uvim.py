"""UViM with a VQ or FSQ bottleneck (FSQ paper, Table 2): the paper's runs and their CPU twins, one function.

  python -m scripts.train --config configs/uvim.py:stage=oracle,task=depth,quantizer=fsq,run=cpu --workdir W1
  python -m scripts.train --config configs/uvim.py:stage=lm,task=depth,quantizer=fsq,run=cpu \\
      --config.tokenizer_workdir=W1 --workdir W2

Arguments (comma-separated key=value):
  stage      oracle (stage I: restricted oracle + base model) | lm (stage II: the VTT on stage I's codes)
  task       depth (NYU Depth v2) | panoptic (COCO panoptic) | colorization (ImageNet)
  quantizer  fsq ([7,5,5,5,5]) | vq (UViM's VQ: EMA 0.995, splitting below 0.1) | vq_nosplit (the ablation)
  context    on (big_vision: oracle and base model see the image) | off (the "without context" ablation)
  run        paper (big_vision's UViM configs, 512 px) | cpu (synthetic scenes at 64 px, minutes per run;
             colorization colours the scenes' images)

Facts from big_vision ``configs/proj/uvim/{vqvae,train}_*`` (tests/test_uvim_tasks.py checks them):
* Stage I (all three tasks): 512 px, patch 16, code_len 256 (16 x 16), width 768, 12 heads, MLP 3072,
  enc_depth 6, dec_depth 12, dict 4096 x 768, dict_momentum 0.995, both contexts, code_dropout random,
  w_commitment 0, batch 1024, cosine schedule, 4k warm-up, grad clip 1.0, adafactor with beta2_cap 0.95.
  Depth: lr 1e-3, wd 1e-5, 200 epochs, 256 bins over [1e-3, 10] m. Panoptic: lr 4e-4, wd 4e-5, 1000
  epochs of COCO train[4096:], 133 + 1 semantic classes (void 0), 100 instances. Colorization: lr 4e-4,
  wd 4e-5, 100 epochs of ImageNet train[4096:].
* Stage II (depth and panoptic configs): VTT large (24 layers, 16 heads, MLP 4096, width 1024), patch 16,
  lr 1e-3 (PAPER.md's 4e-4 is stage I's panoptic/colorization value; the stage II configs say 1e-3), wd 1e-6,
  batch 512, cosine, 4k warm-up, no clipping; depth 50 epochs, panoptic 200 epochs, colorization 50
  epochs (``train_imagenet2012_colorization_pretrained.py``: the same settings). The image encoder starts
  from the ImageNet-21k ViT-L/16 (``vtt.encoder_init``, a file to copy from gs://vit_models/augreg/) and
  trains at 0.1 of the learning rate (``optimizer.lr_multipliers``).
Differences: the optimizer is AdamW(0.9, 0.95) (big_vision: factored adafactor, beta2 capped at 0.95).
big_vision's decoupled weight decay is multiplied by the schedule but not by the learning rate; optax's
AdamW multiplies it by the learning rate, so weight_decay = big_vision wd / peak lr here. Epochs become
steps with the split sizes below.
"""

from __future__ import annotations

import ml_collections

from configs.autoencoder import get_config as autoencoder_config
from configs.common import parse_arg
from fsq.data.scenes import CLASS_NAMES, THING_CLASSES, VOID

STAGES = ("oracle", "lm")
TASKS = ("depth", "panoptic", "colorization")
QUANTIZERS = ("fsq", "vq", "vq_nosplit")
RUNS = ("paper", "cpu")

# Training images of big_vision's splits: NYU Depth v2 train, COCO 2017 train[4096:], ImageNet train[4096:].
TRAIN_IMAGES = {"depth": 47_584, "panoptic": 118_287 - 4096, "colorization": 1_281_167 - 4096}
# (lr, big_vision wd, epochs) per task for stage I and stage II.
PAPER_STAGE_ONE = {
  "depth": (1e-3, 1e-5, 200),
  "panoptic": (4e-4, 4e-5, 1000),
  "colorization": (4e-4, 4e-5, 100),
}
PAPER_STAGE_TWO = {"depth": (1e-3, 1e-6, 50), "panoptic": (1e-3, 1e-6, 200), "colorization": (1e-3, 1e-6, 50)}
# The ImageNet-21k ViT-L/16 of "How to train your ViT" that big_vision calls howto-i21k-L/16.
VIT_L16_I21K = "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0.npz"
SCENES_MAX_DEPTH = 12.0  # scene z-depths lie in about [1.5, 10.8] m


def _steps(task: str, epochs: int, batch_size: int) -> int:
  return epochs * TRAIN_IMAGES[task] // batch_size


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(
    arg,
    dict(stage="oracle", task="depth", quantizer="fsq", context="on", run="cpu"),
    dict(stage=STAGES, task=TASKS, quantizer=QUANTIZERS, context=("on", "off"), run=RUNS),
  )
  stage, task, kind, context, run = (args[k] for k in ("stage", "task", "quantizer", "context", "run"))
  paper = run == "paper"

  c = autoencoder_config()
  c.task = "uvim_oracle" if stage == "oracle" else "uvim_lm"
  c.tokenizer_workdir = ""  # stage II: the stage I workdir whose checkpoint is frozen
  c.tokenizer_step = 0  # its step; 0: the newest, pinned when stage II starts (recorded in config.json)
  # bfloat16 activations and per-block rematerialisation at paper scale: the 512 px attention maps and
  # 256-bin depth logits do not fit a device in float32 (scale-readiness review, section 5).
  c.compute_dtype = "bfloat16" if paper else "float32"
  c.remat = paper

  c.uvim = ml_collections.ConfigDict()
  c.uvim.task = task
  c.uvim.depth_bins = 256
  c.uvim.min_depth = 1e-3
  c.uvim.max_depth = 10.0 if paper else SCENES_MAX_DEPTH
  c.uvim.num_classes = 134 if paper else len(CLASS_NAMES)
  c.uvim.max_instances = 100 if paper else 16
  # COCO's thing ids come with the dataset's metadata (the first 80 of 133 classes, ids 1..80).
  c.uvim.thing_classes = tuple(range(1, 81)) if paper else THING_CLASSES
  c.uvim.void_label = 0 if paper else VOID
  # big_vision's one class per predicted instance on COCO (every segment has its own instance id); the
  # scenes give all stuff instance 0, so they take semantics per pixel.
  c.uvim.panoptic_prediction = "instance_vote" if paper else "per_pixel"
  # PQ at the original resolution (scripts.evaluate --metrics dense_native) splits stuff by instance id,
  # as big_vision's panopticapi scoring of two-channel outputs does; the scenes' stuff is all instance 0.
  c.uvim.pq_stuff_by_instance = paper
  # Colorization FID (scripts.evaluate --metrics color_fid): ColTran's FID-5k at paper scale, the
  # colourings of validation images 0-4999 against images 10000-14999, both area-resized to 256 px and
  # rounded to 8 bits; the scenes (500 test images) compare the colourings with the same images.
  c.uvim.fid_reference_offset = 10_000 if paper else 0
  c.uvim.fid_size = 256 if paper else 0

  c.data.image_size = 512 if paper else 64
  c.data.channels = 3
  c.data.random_flip = True
  if paper:
    c.data.name = {"depth": "nyu_depth_v2", "panoptic": "coco/2017_panoptic", "colorization": "imagenet2012"}[
      task
    ]
    c.data.data_dir = "~/tensorflow_datasets"
    c.data.worker_count = 16  # JPEG decode, inception crop and resize to 512 px in Grain worker processes
    # big_vision holds out COCO's and ImageNet's first 4096 training images (TRAIN_IMAGES counts the rest).
    c.data.train_split = "train" if task == "depth" else "train[4096:]"
    c.data.eval_split = "validation"
    # big_vision trains every stage on inception crops resized to 512 x 512 and evaluates at resize(512):
    # 512 x 512, the aspect ratio not kept.
    c.data.random_crop = "inception"
    c.data.resize_mode = "squash"
  else:
    c.data.name = "synthetic_scenes/64"
    c.data.resize_mode = "pad"
  c.data.dense = {"depth": ("depth",), "panoptic": ("semantic", "instance"), "colorization": ()}[task]

  c.model = ml_collections.ConfigDict()
  c.model.patch_size = 16 if paper else 8
  c.model.code_grid = 16 if paper else 8
  c.model.width = 768 if paper else 64
  c.model.oracle_depth = 6 if paper else 2
  c.model.base_depth = 12 if paper else 2
  c.model.num_heads = 12 if paper else 4
  c.model.mlp_dim = 3072 if paper else 256
  c.model.dropout = 0.0
  c.model.context = context == "on"
  c.model.code_dropout = "random"

  c.quantizer.kind = "fsq" if kind == "fsq" else "vq_uvim"
  c.quantizer.levels = (7, 5, 5, 5, 5) if paper else (8, 5, 5, 5)
  c.quantizer.codebook_size = 4096 if paper else 1024
  c.quantizer.vq_dim = 768 if paper else 64
  c.quantizer.split = kind != "vq_nosplit"

  c.vtt = ml_collections.ConfigDict()
  # At CPU scale a VTT of 2 layers at width 64 emitted 1 to 7% of the codes that stage I used 41 to 86%
  # of (experiments/results/uvim/cpu/FINDINGS.md): 4 layers at width 128 give stage II room to learn.
  c.vtt.width = 1024 if paper else 128
  c.vtt.depth = 24 if paper else 4
  c.vtt.num_heads = 16 if paper else 4
  c.vtt.mlp_dim = 4096 if paper else 512
  c.vtt.patch_size = 16 if paper else 8
  c.vtt.dropout = 0.0
  # big_vision's model_init {"encoder": "howto-i21k-L/16"}: copy gs://vit_models/augreg/VIT_L16_I21K here.
  c.vtt.encoder_init = f"~/vit_checkpoints/{VIT_L16_I21K}" if paper else ""

  o = c.optimizer
  o.b1, o.b2, o.schedule = 0.9, 0.95, "cosine"
  if paper:
    lr, wd, epochs = (PAPER_STAGE_ONE if stage == "oracle" else PAPER_STAGE_TWO)[task]
    c.batch_size = 1024 if stage == "oracle" else 512
    c.num_train_steps = _steps(task, epochs, c.batch_size)
    o.learning_rate, o.weight_decay, o.warmup_steps = lr, wd / lr, 4000
    o.grad_clip_norm = 1.0 if stage == "oracle" else 0.0
    # big_vision's lr_mults: the pretrained encoder (patch embedding, position embedding, blocks) at 0.1.
    o.lr_multipliers = () if stage == "oracle" else (("encoder/.*", 0.1),)
    c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 2000, 1000, 50
  else:
    c.batch_size = 16
    c.num_train_steps = 2000
    o.learning_rate, o.weight_decay, o.warmup_steps, o.grad_clip_norm = 1e-3, 0.01, 100, 1.0
    c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 500, 500, 50
  return c
