"""MaskGIT stage II on a frozen tokenizer: the masked loss against numpy, sampling, the generic loop."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from fsq.maskgit.schedule import training_mask
from fsq.maskgit.vocab import Vocabulary
from fsq.models.transformer import BidirectionalTransformer
from fsq.tasks import build_autoencoder, train_and_evaluate
from fsq.tasks.maskgit import MaskGITTask
from tests.helpers import (
  MASKGIT_TINY,
  REPO,
  read_metrics,
  restore_params,
  run_one_process,
  run_two_processes,
  tiny_autoencoder_config,
  tiny_maskgit_config,
)


def make_task(config):
  tokenizer = build_autoencoder(config)  # FSQ (8, 5, 5, 5): 1000 codes, 16x16 tokens for 32x32 images
  variables = jax.jit(tokenizer.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  vocab = Vocabulary(codebook_size=1000, num_classes=10)
  transformer = BidirectionalTransformer(
    vocab.size, 1 + 256, hidden=32, num_layers=2, num_heads=4, mlp_dim=64
  )
  return MaskGITTask(tokenizer, variables, transformer, vocab, optax.adam(1e-3))


def test_masked_loss_matches_numpy_label_smoothed_cross_entropy_on_masked_positions(tfds_data_dir):
  task = make_task(tiny_autoencoder_config(tfds_data_dir))
  tokens = jax.random.randint(jax.random.key(1), (3, 256), 0, 1000)
  labels = jnp.asarray([0, 4, 9])
  params = jax.jit(task.init)(jax.random.key(2), {"image": jnp.zeros((3, 32, 32, 1))}).params
  rng = jax.random.key(3)
  loss, _ = jax.jit(task.masked_loss, static_argnames="train")(params, tokens, labels, rng, train=False)
  # Reference: the same masks, the transformer's logits, smoothed cross-entropy in float64 numpy.
  masked = np.asarray(training_mask(jax.random.split(rng, 3)[0], 3, 256, 0.45))
  inputs = task.vocab.sequence(labels, jnp.where(masked, task.vocab.mask_id, tokens))
  logits = np.asarray(jax.jit(task.transformer.apply)({"params": params}, inputs), np.float64)[:, 1:, :1000]
  log_p = logits - logits.max(-1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
  target = np.full((3, 256, 1000), 0.1 / 1000) + 0.9 * np.eye(1000)[np.asarray(tokens)]
  per_token = -(target * log_p).sum(-1)
  per_example = (per_token * masked).sum(-1) / masked.sum(-1)  # MaskGIT: each example's mean, not pooled
  np.testing.assert_allclose(loss, per_example, rtol=1e-4)
  assert not np.isclose(per_example.mean(), per_token[masked].mean(), rtol=1e-6)
  assert masked.sum(-1).min() >= 116  # ceil(0.45 * 256)


@pytest.mark.slow
def test_stage_two_trains_in_the_generic_loop_and_samples(tfds_data_dir, tmp_path):
  config = tiny_autoencoder_config(tfds_data_dir, "steps=2")
  task = dataclasses.replace(make_task(config), samples_per_class=2, num_sampling_steps=4)
  final = train_and_evaluate(config, tmp_path, task=task)
  assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2]
  assert np.isfinite(final["masked_loss"]) and 0 <= final["masked_accuracy"] <= 1
  assert final["codebook/count"] == 2 * 8 * 256
  # One row per class (10), samples_per_class (2) columns of 32x32 images with 1-pixel borders.
  grid = np.asarray(Image.open(tmp_path / "images" / "eval_samples_00000002.png"))
  assert grid.shape == (10 * 33 + 1, 2 * 33 + 1)
  state = jax.jit(task.init)(jax.random.key(4), {"image": jnp.zeros((2, 32, 32, 1))})
  sample = jax.jit(task.sample, static_argnames="num_steps")
  images = sample(state, task.constants(), jnp.asarray([1, 7]), jax.random.key(5), num_steps=4)
  assert images.shape == (2, 32, 32, 1) and float(jnp.abs(images).max()) <= 1.0


def test_grid_labels_give_one_row_per_class_and_spread_large_label_sets(tfds_data_dir):
  task = make_task(tiny_autoencoder_config(tfds_data_dir))
  np.testing.assert_array_equal(task.grid_labels().reshape(10, 8), np.arange(10)[:, None] * np.ones((1, 8)))
  imagenet = dataclasses.replace(task, vocab=Vocabulary(1000, 1000), samples_per_class=2)
  np.testing.assert_array_equal(imagenet.grid_labels()[::2], [0, 111, 222, 333, 444, 555, 666, 777, 888, 999])


@pytest.mark.slow
def test_stage_two_in_two_processes_matches_one_process_with_four_devices(
  tfds_data_dir, tiny_tokenizer, tmp_path
):
  """Multi-process training and evaluation equal one process: stage II as 2 processes x 2 devices
  (scripts.launch_local, 2 data shards) trains exactly as 1 process x 4 devices, losses and parameters,
  and scripts.evaluate scores both alike. The frozen tokenizer is restored to the host and placed on the
  mesh of every process (a tokenizer committed to one device cannot be moved to a mesh that spans
  processes). This replaces the autoencoder's two-process test: the same loop, launcher and sharded
  input, plus the frozen constants."""
  overrides = {  # the tiny stage II of tiny_maskgit_config, on 2 data shards
    **MASKGIT_TINY,
    "data.data_dir": tfds_data_dir,
    "data.num_shards": 2,
    "tokenizer_workdir": tiny_tokenizer,
  }

  def args(workdir):
    config = f"--config={REPO}/configs/maskgit.py:stage=transformer,run=cpu,quantizer=fsq"
    return [config, f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]

  run_one_process(args(tmp_path / "one"), num_devices=4)
  run_two_processes(args(tmp_path / "two"), tmp_path / "two")
  loss_one = [m["loss"] for m in read_metrics(tmp_path / "one")]
  loss_two = [m["loss"] for m in read_metrics(tmp_path / "two")]
  assert len(loss_one) == len(loss_two) == 2
  np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
  for a, b in zip(
    restore_params(tmp_path / "one", 2)[0], restore_params(tmp_path / "two", 2)[0], strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  # scripts.evaluate on both runs: sampling FID (samples drawn over the mesh, each process extracting
  # Inception features of its rows) and compression (each process coding its rows) equal one process's.
  evaluate = ["--metrics=fid,compression", "--num_images=8"]
  one_eval = [f"--workdir={tmp_path / 'one'}", *evaluate]
  run_one_process(one_eval, 4, "scripts.evaluate", FSQ_FID_CACHE=str(tmp_path / "one_cache"))
  two_eval = [f"--workdir={tmp_path / 'two'}", *evaluate]
  run_two_processes(
    two_eval, tmp_path / "two_eval", "scripts.evaluate", FSQ_FID_CACHE=str(tmp_path / "two_cache")
  )
  one_results = json.loads((tmp_path / "one" / "results.json").read_text())
  two_results = json.loads((tmp_path / "two" / "results.json").read_text())
  for name in ("fid", "precision", "recall", "compression/bits_per_token"):
    np.testing.assert_allclose(two_results[name], one_results[name], rtol=1e-4, err_msg=name)
  # One range-coder stream per process and batch instead of one per batch: at most 64 bits more per
  # stream (two 32-bit words of flushing), over 8 images of 16 x 16 tokens.
  coded_one, coded_two = (r["compression/coded_bits_per_token"] for r in (one_results, two_results))
  assert abs(coded_two - coded_one) <= 64 / (8 * 256)
  assert two_results["compression/num_images"] == one_results["compression/num_images"] == 8


@pytest.mark.slow
def test_stage_two_trains_and_resumes_on_tokens_made_in_two_processes(
  tfds_data_dir, tiny_tokenizer, tmp_path
):
  """scripts.pretokenize (2 processes, one file each) writes exactly the tokenizer's tokens of every image
  and of its mirror image; stage II on them never runs the encoder, resumes bit-identically, and refuses
  tokens of another tokenizer checkpoint."""
  from fsq.data import pipeline
  from fsq.data import tokens as tokens_lib
  from fsq.tasks import build_task
  from fsq.train import mesh as mesh_lib
  from fsq.train.data import InputPipeline, batch_spec
  from fsq.train.loop import jit_train_step

  split = "train[:20]"
  stage_two = {**MASKGIT_TINY, "data.data_dir": tfds_data_dir, "tokenizer_workdir": tiny_tokenizer}
  config_arg = f"--config={REPO}/configs/maskgit.py:stage=transformer,run=cpu,quantizer=fsq"
  args = [config_arg, f"--output={tmp_path / 'tokens'}", f"--split={split}"]
  args += [f"--config.{k}={v}" for k, v in stage_two.items()]
  run_two_processes(args, tmp_path / "logs", "scripts.pretokenize")

  manifest = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
  assert [f["num_records"] for f in manifest["files"]] == [10, 10]
  assert manifest["tokenizer_step"] == 2 and manifest["seq_len"] == 256 and manifest["dtype"] == "<u2"
  # The reference: the same images straight from the pipeline, mirrored in numpy, through the tokenizer.
  config = tiny_maskgit_config(tfds_data_dir, "transformer", tokenizer_workdir=str(tiny_tokenizer))
  config.tokenizer_step = 2
  task = build_task(config)
  source = InputPipeline(config.data, 8, 0).train_source
  loader = pipeline.make_loader(
    pipeline.ImageSource([source.examples[i] for i in range(20)], source.image_shape),
    batch_size_per_process=20,
    seed=0,
    shuffle=False,
    num_epochs=1,
    image_size=32,
    resize_mode="pad",
    random_flip=False,
    worker_count=0,
    read_threads=1,
    prefetch_buffer_size=1,
    process_index=0,
    process_count=1,
  )
  batch = next(iter(loader))
  encode = jax.jit(task.tokens)
  expected = np.asarray(encode(task.constants(), batch["image"]))
  expected_mirrored = np.asarray(encode(task.constants(), np.ascontiguousarray(batch["image"][:, :, ::-1])))
  assert not (expected == expected_mirrored).all()
  made = tokens_lib.TokenSource.open(tmp_path / "tokens")
  records = [tokens_lib.decode_record(made[i], 256, np.dtype("<u2")) for i in range(len(made))]
  np.testing.assert_array_equal([r[0] for r in records], batch["label"])  # in the split's order
  np.testing.assert_array_equal(np.stack([r[1] for r in records]), expected)
  np.testing.assert_array_equal(np.stack([r[2] for r in records]), expected_mirrored)

  # The loop's training program on a batch of tokens has no convolution (the encoder never runs).
  mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.model)
  state = jax.eval_shape(task.init, jax.random.key(0), {"image": batch_spec(config.data, 8, True)["image"]})
  step = jit_train_step(task, mesh_lib.state_shardings(state, mesh), mesh, 0)
  for folder, encodes in (("", True), (str(tmp_path / "tokens"), False)):
    config.data.tokens_dir = folder
    program = step.lower(state, batch_spec(config.data, 8, seq_len=256), task.constants()).as_text()
    assert ("stablehlo.convolution" in program) == encodes

  # 4 steps straight equal 2 steps, a restart, and 2 more (the token loader's state is checkpointed;
  # a constant learning rate, as the schedule depends on num_train_steps).
  def run(workdir, steps, **extra):
    c = tiny_maskgit_config(tfds_data_dir, "transformer", tokenizer_workdir=str(tiny_tokenizer), **extra)
    c.data.tokens_dir, c.data.random_flip, c.num_train_steps = str(tmp_path / "tokens"), True, steps
    c.data.train_split = split  # the manifest pins the split the tokens were made of
    c.optimizer.schedule = "constant"
    return train_and_evaluate(c, workdir)

  run(tmp_path / "straight", 4)
  run(tmp_path / "resumed", 2)
  run(tmp_path / "resumed", 4)
  straight = [m["loss"] for m in read_metrics(tmp_path / "straight")]
  resumed = [m["loss"] for m in read_metrics(tmp_path / "resumed")]
  assert straight == resumed and len(straight) == 4
  for a, b in zip(*(restore_params(tmp_path / w, 4)[0] for w in ("straight", "resumed")), strict=True):
    np.testing.assert_array_equal(a, b)
  recorded = json.loads((tmp_path / "straight" / "config.json").read_text())
  assert recorded["tokenizer_step"] == 2  # pinned to the manifest's checkpoint, not stage I's newest

  with pytest.raises(ValueError, match="tokenizer_step: tokens made with 2, this run has 1"):
    run(tmp_path / "other", 2, tokenizer_step=1)
  # Evaluation reads images: a run trained on tokens loads without its tokens folder.
  from fsq.tasks.evaluate import load_run

  (tmp_path / "tokens").rename(tmp_path / "tokens_gone")
  assert load_run(tmp_path / "straight").step == 4
