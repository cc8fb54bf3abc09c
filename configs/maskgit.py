"""MaskGIT with an FSQ or VQ tokenizer: the paper's runs and their CPU-scale twins, one config function.

  python -m scripts.train --config configs/maskgit.py:stage=tokenizer,run=imagenet256,quantizer=fsq \
      --workdir W1
  python -m scripts.train --config configs/maskgit.py:stage=transformer,run=imagenet256,quantizer=fsq \\
      --config.tokenizer_workdir=W1 --workdir W2

Arguments (comma-separated key=value):
  stage      tokenizer (stage I) | transformer (stage II)
  run        imagenet256 (Fig. 4: FSQ [8,5,5,5] vs VQ 1024) | imagenet128 (Fig. 3, the codebook-size study)
             | cpu (Fashion-MNIST padded to 32x32, 8x8 tokens: the same code in minutes)
  quantizer  fsq | vq (MaskGIT's VQ: commitment, codebook and entropy losses) | vq_plain (without the
             entropy loss)
  codebook   log2 of the codebook size (8, 10, 12, 14, 16) for run=imagenet128 (the study's sizes) and
             run=cpu; default 10. FSQ takes the paper's Table-1 levels for it, VQ that many codes
  levels     FSQ levels joined by '-' (e.g. 8-8-8 or 7-5-5-5-5), for any run; overrides codebook
Hyperparameters are those listed in ../shared/PAPER.md (MaskGIT's VQGAN and transformer configs and the
FSQ paper's changes), checked by tests/test_configs.py. Where PAPER.md is silent they follow the released
code of MaskGIT and MAGVIT: the loss weights rescaled to this code's pixel range, the ResNet-50 perceptual
loss, the discriminator per image size, weight decay on kernels, clipping; the README's table of
differences from the references lists each choice.
"""

from __future__ import annotations

import ml_collections

from configs.autoencoder import get_config as autoencoder_config
from configs.common import given, parse_arg
from fsq.models.discriminator import maskgit_widths
from fsq.quantizers import levels_for_codebook_size

RUNS = {
  # image size, stage I batch and steps, stage II batch and steps, dataset
  "imagenet256": dict(image_size=256, batch_1=512, steps_1=1_000_000, batch_2=256, steps_2=2_500_000),
  "imagenet128": dict(image_size=128, batch_1=256, steps_1=500_000, batch_2=256, steps_2=1_000_000),
  "cpu": dict(image_size=32, batch_1=64, steps_1=1000, batch_2=64, steps_2=1000),
}
# Best classifier-free guidance scale per tokenizer (Fig. 4).
GUIDANCE = {"fsq": 0.2, "vq": 0.1, "vq_plain": 0.1}
# The tokenizer's bottleneck per quantizer argument; vq_plain is MaskGIT's VQ without the entropy loss.
KINDS = {"fsq": "fsq", "vq": "vq_maskgit", "vq_plain": "vq_plain"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(
    arg,
    dict(stage="tokenizer", run="cpu", quantizer="fsq", codebook=10, levels=()),
    dict(stage=("tokenizer", "transformer"), run=sorted(RUNS), quantizer=sorted(GUIDANCE)),
  )
  stage, run, kind, bits = args["stage"], args["run"], args["quantizer"], args["codebook"]
  if run == "imagenet256" and bits != 10:
    raise ValueError(f"codebook is an argument of run=imagenet128 and run=cpu, got codebook={bits} for {run}")
  if "levels" in given(arg) and kind != "fsq":
    raise ValueError(f"levels is an argument of quantizer=fsq, got levels={args['levels']} for {kind}")
  r = RUNS[run]

  c = autoencoder_config("size=cpu" if run == "cpu" else "size=tokenizer")
  c.task = stage
  c.num_train_steps = r["steps_1"] if stage == "tokenizer" else r["steps_2"]
  c.batch_size = r["batch_1"] if stage == "tokenizer" else r["batch_2"]
  c.eval_every_steps = 500 if run == "cpu" else 10_000
  c.checkpoint_every_steps = 250 if run == "cpu" else 5_000
  if run != "cpu":
    # bfloat16 activations on the accelerators; the tokenizer's 256^2 x 128 activations (encoder, decoder,
    # discriminator twice, R1's double backward) are recomputed per ResBlock rather than kept.
    c.compute_dtype = "bfloat16"
    c.remat = stage == "tokenizer"
    c.data.name, c.data.image_size, c.data.channels = "imagenet2012", r["image_size"], 3
    c.data.eval_split, c.data.resize_mode, c.data.random_flip = "validation", "crop", True
    c.data.data_dir = "~/tensorflow_datasets"
    # JPEG decode and crop cost about 4.5 ms per image on one core (scripts.benchmark --suite input); a v4
    # host's share of stage I at the paper batch needs about 400 images/s at 50% MFU: Grain workers.
    c.data.worker_count = 16

  levels = args["levels"] or levels_for_codebook_size(2**bits)
  c.quantizer.kind = KINDS[kind]
  c.quantizer.levels = levels
  c.quantizer.codebook_size = 2**bits
  c.quantizer.vq_dim = 256 if run != "cpu" else 32

  c.gan = ml_collections.ConfigDict()
  # MaskGIT's weights (L2 1, R1 10) are for pixels in [0, 1]; ours span [-1, 1], twice that, which makes
  # the squared error 4x and R1 1/4 of theirs on the same images: L2 1/4 and R1 4 x 10 restore the balance.
  c.gan.l2_weight = 0.25
  # MaskGIT's perceptual loss: ImageNet ResNet-50 feature maps (fsq.models.resnet); "lpips" for LPIPS-VGG16.
  c.gan.perceptual = "resnet50"
  c.gan.perceptual_weight = 0.1 if run != "cpu" else 0.0  # costly on CPU; a flag turns it on
  # The perceptual network stays float32 under bfloat16 activations: its loss is a difference of two
  # nearly equal feature maps, which bfloat16's rounding swamps once reconstructions are close (2.5 grey
  # levels apart: the ResNet-50 loss 40% off, its gradient at cosine 0.80; tests/test_resnet.py).
  c.gan.perceptual_dtype = "float32"
  c.gan.adversarial_weight = 0.1
  c.gan.r1_weight = 40.0
  c.gan.disc_start_step = 0 if run != "cpu" else 200
  c.gan.ema_decay = 0.999 if run != "cpu" else 0.99
  # MaskGIT's discriminator follows the image size (fsq.models.discriminator.maskgit_widths).
  disc = maskgit_widths(r["image_size"]) if run != "cpu" else (16, (1, 2, 2))
  c.gan.disc_filters, c.gan.disc_channel_multipliers = disc

  if stage == "tokenizer":
    c.optimizer.learning_rate = 1e-4 if run != "cpu" else 1e-3
    c.optimizer.b1, c.optimizer.b2 = 0.0, 0.99
    # MaskGIT's recipe: constant, unclipped. At CPU scale (learning rate 1e-3, b1 = 0) 12 of 14 runs of
    # the codebook study had loss spikes with it, so the CPU runs warm up over 100 steps, clip the
    # gradient norm at 1 and follow a cosine to zero at num_train_steps; the studies, which train without
    # the GAN, also keep Adam's momentum (experiments/registry.py).
    c.optimizer.warmup_steps = 0 if run != "cpu" else 100
    c.optimizer.schedule = "constant" if run != "cpu" else "cosine"
    c.optimizer.grad_clip_norm = 0.0 if run != "cpu" else 1.0
  else:
    c.optimizer.learning_rate = 1e-4 if run != "cpu" else 1e-3
    c.optimizer.b1, c.optimizer.b2 = 0.9, 0.96
    c.optimizer.weight_decay = 0.045
    c.optimizer.warmup_steps = 5000 if run != "cpu" else 100
    c.optimizer.schedule = "cosine"
    c.optimizer.grad_clip_norm = 1.0  # magvit's MaskGIT trainer clips at 1.0; MaskGIT's config is silent

  c.transformer = ml_collections.ConfigDict()
  big = run != "cpu"
  c.transformer.num_layers = 24 if big else 4
  c.transformer.hidden = 768 if big else 128
  c.transformer.num_heads = 16 if big else 4
  c.transformer.mlp_dim = 3072 if big else 512
  c.transformer.dropout = 0.1
  c.transformer.num_classes = 1000 if big else 10
  c.transformer.min_mask_ratio = 0.45
  c.transformer.label_drop_rate = 0.1
  c.transformer.label_smoothing = 0.1
  c.sampling = ml_collections.ConfigDict(
    dict(num_steps=12, choice_temperature=4.5, guidance_scale=GUIDANCE[kind], samples_per_class=8)
  )
  # Sampling FID's reference images: the paper (ADM's suite) compares with the training split; "" is the
  # evaluation split, which the CPU runs keep.
  c.fid_reference_split = "train" if run != "cpu" else ""
  c.tokenizer_workdir = ""  # stage II: the stage I workdir whose checkpoint is the frozen tokenizer
  c.tokenizer_step = 0  # its step; 0: the newest, pinned when stage II starts (recorded in config.json)
  return c
