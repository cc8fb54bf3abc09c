"""UViM tasks: representations and losses against numpy, both stages through the loop, the configs."""

import dataclasses
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.uvim import get_config
from fsq import weights
from fsq.data import builders
from fsq.evals.features import FeatureExtractor
from fsq.tasks import build_task, build_uvim_stage_two_task, train_and_evaluate
from fsq.tasks import evaluate as run_eval
from fsq.tasks.dense import ColorizationRepresentation, DepthRepresentation, PanopticRepresentation
from fsq.tasks.dense.depth import bins_to_depth, depth_loss, depth_to_bins
from fsq.tasks.dense.panoptic import instance_vote, panoptic_loss
from fsq.tasks.evaluate import colorization_fid, evaluate, load_run
from fsq.tasks.validate import validate_config
from fsq.train.checkpoint import restore_to_host
from tests.helpers import (
  REPO,
  UVIM_TINY,
  fid_scipy,
  flat_params,
  inception_pool,
  read_metrics,
  restore_params,
  run_one_process,
  run_two_processes,
  tiny_uvim_config,
)


def _log_softmax(logits):
  logits = logits - logits.max(-1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_depth_bins_round_trip_within_half_a_bin():
  rng = np.random.default_rng(0)
  depth = rng.uniform(1e-3, 12.0, (4, 16, 16)).astype(np.float32)
  bins = depth_to_bins(jnp.asarray(depth), 256, 1e-3, 12.0)
  assert bins.dtype == jnp.int32 and int(bins.min()) >= 0 and int(bins.max()) <= 255
  centres = np.asarray(bins_to_depth(bins, 256, 1e-3, 12.0))
  assert np.max(np.abs(centres - depth)) <= 0.5 * (12.0 - 1e-3) / 256 + 1e-5
  clipped = depth_to_bins(jnp.array([-1.0, 0.0, 12.0, 50.0]), 256, 1e-3, 12.0)
  np.testing.assert_array_equal(clipped, [0, 0, 255, 255])
  rep = DepthRepresentation(256, 1e-3, 12.0)
  np.testing.assert_allclose(rep.predict(rep.target({"depth": jnp.asarray(depth)})), centres)


def test_panoptic_one_hot_argmax_identity():
  rng = np.random.default_rng(1)
  rep = PanopticRepresentation(num_classes=5, max_instances=16, thing_classes=(2, 3, 4), void_label=-1)
  batch = {
    "semantic": jnp.asarray(rng.integers(0, 5, (2, 8, 8))),
    "instance": jnp.asarray(rng.integers(0, 16, (2, 8, 8))),
  }
  y = rep.target(batch)
  assert y.shape == (2, 8, 8, 21)
  pred = rep.predict(y)
  np.testing.assert_array_equal(pred[..., 0], batch["semantic"])
  np.testing.assert_array_equal(pred[..., 1], batch["instance"])


def test_instance_vote_gives_each_predicted_instance_its_summed_logits_class():
  """big_vision's rule against a numpy loop over instances, and a hand-made case: instance 1 covers
  three pixels whose per-pixel argmaxes are 2, 2, 0; the vote gives all three class 2."""
  rng = np.random.default_rng(3)
  semantic, instance = rng.normal(size=(2, 6, 6, 5)), rng.normal(size=(2, 6, 6, 4))
  got = np.asarray(instance_vote(jnp.asarray(semantic), jnp.asarray(instance)))
  ids = instance.argmax(-1)
  np.testing.assert_array_equal(got[..., 1], ids)
  for b, i in itertools.product(range(2), range(4)):
    inside = ids[b] == i
    if inside.any():
      assert np.all(got[b][inside, 0] == semantic[b][inside].sum(0).argmax()), (b, i)

  logits = np.zeros((1, 1, 4, 3))
  logits[0, 0, :, :] = [[0, 0, 2], [0, 0, 1], [1.5, 0, 0], [0, 3, 0]]
  inst = np.zeros((1, 1, 4, 2))
  inst[0, 0, :3, 1] = inst[0, 0, 3, 0] = 1.0
  got = np.asarray(instance_vote(jnp.asarray(logits), jnp.asarray(inst)))
  np.testing.assert_array_equal(got[0, 0], [[2, 1], [2, 1], [2, 1], [1, 0]])
  rep = PanopticRepresentation(3, 2, (1, 2), prediction="instance_vote")
  np.testing.assert_array_equal(rep.predict(jnp.concatenate([logits, inst], -1)), got)
  with pytest.raises(ValueError, match="'vote'"):
    PanopticRepresentation(3, 2, (1, 2), prediction="vote")


def test_depth_loss_matches_numpy():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 4, 4, 7))
  bins = rng.integers(0, 7, (2, 4, 4))
  picked = np.take_along_axis(_log_softmax(logits), bins[..., None], -1)[..., 0]
  expected = np.mean(-picked * (bins != 0), axis=(1, 2))
  got = depth_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(bins))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_panoptic_loss_matches_numpy_and_ignores_void():
  rng = np.random.default_rng(3)
  sem_logits, ins_logits = rng.normal(size=(2, 4, 4, 5)), rng.normal(size=(2, 4, 4, 3))
  semantic, instance = rng.integers(0, 5, (2, 4, 4)), rng.integers(0, 3, (2, 4, 4))
  semantic[0, 0, 0] = -1  # void: no semantic term
  sem_term = -np.take_along_axis(_log_softmax(sem_logits), np.maximum(semantic, 0)[..., None], -1)[..., 0]
  sem_term = np.where(semantic < 0, 0.0, sem_term)
  ins_term = -np.take_along_axis(_log_softmax(ins_logits), instance[..., None], -1)[..., 0]
  expected = np.mean(sem_term + ins_term, axis=(1, 2))
  args = [jnp.asarray(a, jnp.float32) for a in (sem_logits, ins_logits)] + [
    jnp.asarray(semantic),
    jnp.asarray(instance),
  ]
  np.testing.assert_allclose(panoptic_loss(*args), expected, rtol=1e-5)


def test_colorization_grey_input_and_l2_loss():
  rng = np.random.default_rng(4)
  images = rng.uniform(-1, 1, (2, 4, 4, 3))
  rep = ColorizationRepresentation()
  grey = np.asarray(rep.context(jnp.asarray(images, jnp.float32)))
  luma = images @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(grey, np.repeat(luma[..., None], 3, -1), atol=1e-6)
  outputs = rng.uniform(-1, 1, images.shape)
  got = rep.loss(jnp.asarray(outputs, jnp.float32), {"image": jnp.asarray(images, jnp.float32)})
  np.testing.assert_allclose(got, np.mean((outputs - images) ** 2, axis=(1, 2, 3)), rtol=1e-5)
  # Metrics over the valid images (the third is padding): mean squared error and big_vision's mean of
  # per-image PSNRs, peak-to-peak 2; two very different errors, so the mean PSNR is not the PSNR of the mean.
  outputs = np.stack([images[0] + 0.01, images[1] + 0.5, images[0]])
  batch = {"image": jnp.asarray(np.stack([images[0], images[1], images[1]]), jnp.float32)}
  sums = rep.eval_sums(jnp.asarray(outputs, jnp.float32), batch, jnp.asarray([1.0, 1.0, 0.0]))
  metrics = rep.summarize({**jax.device_get(sums), "count": 2.0})
  errors = [np.mean((np.clip(outputs[i], -1, 1) - np.asarray(batch["image"][i])) ** 2) for i in (0, 1)]
  np.testing.assert_allclose(metrics["color/mse"], np.mean(errors), rtol=1e-5)
  np.testing.assert_allclose(
    metrics["color/psnr"], np.mean([10 * np.log10(4 / e) for e in errors]), rtol=1e-5
  )
  assert abs(metrics["color/psnr"] - 10 * np.log10(4 / np.mean(errors))) > 1


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("scenes")
  builders.prepare("synthetic_scenes/tiny", data_dir)
  return data_dir


def test_every_uvim_config_validates_and_bad_patches_are_named():
  for arg in itertools.product(("oracle", "lm"), ("depth", "panoptic", "colorization"), ("fsq", "vq")):
    for run in ("cpu", "paper"):
      validate_config(get_config("stage={},task={},quantizer={},".format(*arg) + f"run={run}"))
  config = get_config("run=cpu")
  config.model.patch_size = 7
  with pytest.raises(ValueError, match=r"image_size = 64 must be divisible by model\.patch_size = 7"):
    validate_config(config)
  config.model.patch_size, config.model.code_grid = 8, 16
  with pytest.raises(ValueError, match="code_grid = 16 must be at most the patch grid 8"):
    validate_config(config)


def _final_metrics(workdir):
  train = read_metrics(workdir)
  assert [m["step"] for m in train] == [1, 2] and all(np.isfinite(m["loss"]) for m in train)
  return json.loads((workdir / "final_metrics.json").read_text())


@pytest.fixture(scope="module")
def depth_stage_one(scenes_dir, tmp_path_factory):
  """A tiny UViM depth stage I (FSQ) trained 2 steps, once for the module: (workdir, final metrics)."""
  workdir = tmp_path_factory.mktemp("depth_stage_one")
  final = train_and_evaluate(tiny_uvim_config(scenes_dir, "stage=oracle,task=depth,quantizer=fsq"), workdir)
  return workdir, final


def test_stage_one_depth_trains_and_evaluates(depth_stage_one):
  workdir, final = depth_stage_one
  assert final == _final_metrics(workdir)
  assert np.isfinite(final["depth/rmse"]) and 0 < final["depth/rmse"] < 12
  assert final["depth/skipped"] == 0 and np.isfinite(final["task_loss"])
  assert final["codebook/count"] == 4 * 4 * 4  # 4 test images, 4x4 codes each
  assert (workdir / "images" / "eval_oracle_00000002.png").exists()


@pytest.mark.slow
def test_stage_two_in_two_processes_matches_one_process(scenes_dir, depth_stage_one, tmp_path):
  """UViM stage II as 2 processes x 2 devices (scripts.launch_local, 2 data shards) trains and evaluates
  as one process with 4 devices: losses, parameters and the depth metrics over the test split. The
  frozen stage I reaches every process's mesh from the host."""
  overrides = {
    **UVIM_TINY,
    "data.data_dir": scenes_dir,
    "data.num_shards": 2,
    "tokenizer_workdir": depth_stage_one[0],
  }

  def args(workdir):
    config = f"--config={REPO}/configs/uvim.py:stage=lm,task=depth,quantizer=fsq,run=cpu"
    return [config, f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]

  run_one_process(args(tmp_path / "one"), num_devices=4)
  run_two_processes(args(tmp_path / "two"), tmp_path / "two")
  np.testing.assert_allclose(
    [m["loss"] for m in read_metrics(tmp_path / "two")],
    [m["loss"] for m in read_metrics(tmp_path / "one")],
    rtol=1e-5,
  )
  for a, b in zip(
    restore_params(tmp_path / "one", 2)[0], restore_params(tmp_path / "two", 2)[0], strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # updates are ~1e-3 (the learning rate)
  one, two = (_final_metrics(tmp_path / name) for name in ("one", "two"))
  assert one["codebook/count"] == two["codebook/count"] == 4 * 16  # the 4 test images, each counted once
  for name in ("depth/rmse", "depth/abs_rel", "code_loss"):
    np.testing.assert_allclose(two[name], one[name], rtol=1e-4, err_msg=name)
  # dense_native: each process predicts and scores its shard of the images (3 of them: shards of 1 and
  # 2, the first padded), the sums merged: the metrics of one process over all of them.
  evaluate = ["--metrics=dense_native", "--num_images=3"]
  run_one_process([f"--workdir={tmp_path / 'one'}", *evaluate], 4, "scripts.evaluate")
  run_two_processes([f"--workdir={tmp_path / 'two'}", *evaluate], tmp_path / "two_eval", "scripts.evaluate")
  one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
  assert one["native/num_images"] == two["native/num_images"] == 3
  for name in ("native/depth/rmse", "native/depth/abs_rel", "native/depth/delta1"):
    np.testing.assert_allclose(two[name], one[name], rtol=1e-4, err_msg=name)


def _stage_two_encoder_checkpoint(config, path, seed):
  """Writes the image encoder of a freshly initialised stage II VTT as a big_vision ``.npz``."""
  task = build_uvim_stage_two_task(config, stage_one_variables={})
  init = jax.jit(task.init)(jax.random.key(seed), {"image": jnp.zeros((2, 64, 64, 3))})
  encoder = jax.device_get(init.params["encoder"])
  np.savez(path, **flat_params(encoder))
  return task, encoder


def test_stage_two_encoder_starts_from_a_big_vision_checkpoint_and_trains_at_a_tenth(scenes_dir, tmp_path):
  config = tiny_uvim_config(scenes_dir, "stage=lm,task=panoptic,quantizer=vq")
  task, encoder = _stage_two_encoder_checkpoint(config, tmp_path / "vit.npz", seed=1)
  task = dataclasses.replace(task, encoder_init=str(tmp_path / "vit.npz"))
  state = jax.jit(task.init)(jax.random.key(0), {"image": jnp.zeros((2, 64, 64, 3))})
  pretrained = task.pretrained(jax.eval_shape(lambda: state.params))
  started = jax.jit(task.with_pretrained)(state, pretrained)
  for a, b in zip(jax.tree.leaves(started.params["encoder"]), jax.tree.leaves(encoder), strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(
    jax.tree.leaves(started.params["decoder"]), jax.tree.leaves(state.params["decoder"]), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  assert dataclasses.replace(task, encoder_init="").pretrained(state.params) is None
  paper = get_config("stage=lm,task=depth,quantizer=fsq,run=paper")
  assert paper.vtt.encoder_init.endswith("L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0.npz")
  assert tuple(map(tuple, paper.optimizer.lr_multipliers)) == (("encoder/.*", 0.1),)


@pytest.mark.slow
def test_stage_one_panoptic_vq_then_stage_two(scenes_dir, tmp_path):
  config = tiny_uvim_config(scenes_dir, "stage=oracle,task=panoptic,quantizer=vq")
  final = train_and_evaluate(config, tmp_path / "one")
  assert 0 <= final["pq/all_pq"] <= 1 and final["codebook/count"] == 4 * 4 * 4
  config_two = tiny_uvim_config(scenes_dir, "stage=lm,task=panoptic,quantizer=vq")
  config_two.tokenizer_workdir = str(tmp_path / "one")
  # The image encoder starts from a checkpoint in big_vision's layout, trained at 0.1 of the rate.
  _, encoder = _stage_two_encoder_checkpoint(config_two, tmp_path / "vit.npz", seed=7)
  _, own_init = _stage_two_encoder_checkpoint(config_two, tmp_path / "own.npz", seed=config_two.seed)
  config_two.vtt.encoder_init = str(tmp_path / "vit.npz")
  config_two.optimizer.lr_multipliers = (("encoder/.*", 0.1),)
  final_two = train_and_evaluate(config_two, tmp_path / "two")
  assert final_two == _final_metrics(tmp_path / "two")
  assert np.isfinite(final_two["code_loss"]) and 0 <= final_two["pq/all_pq"] <= 1
  assert final_two["codebook/count"] == 4 * 16

  def largest_difference(a, b):
    return max(
      float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )

  # At the scenes' own 64 px the paper-protocol evaluation (original size, scripts.evaluate) scores
  # exactly what the loop's in-step statistics scored.
  native = evaluate(tmp_path / "two", ("dense_native",), 4)
  assert native["native/pq/all_pq"] == pytest.approx(final_two["pq/all_pq"], abs=1e-6)
  assert native["native/pq/things_sq"] == pytest.approx(final_two["pq/things_sq"], abs=1e-6, nan_ok=True)
  trained = restore_to_host(tmp_path / "two" / "checkpoints" / "2")["params"]["encoder"]
  # Two Adam steps at 0.1 x 1e-3 move no weight by more than a few 1e-4; the run's own init is far off.
  assert 0 < largest_difference(trained, encoder) < 1e-3 < 0.05 < largest_difference(trained, own_init)


@pytest.mark.slow
def test_colorization_without_context_then_stage_two_color_fid(scenes_dir, tmp_path):
  """Colorization end to end with context=off (the oracle and base model never see the grey image), then
  stage II and evaluate's color_fid against FID recomputed from the restored model with scipy."""
  if not weights.path_of("inception_fid").exists():
    pytest.skip("run `python -m scripts.fetch_weights inception_fid`")
  config = tiny_uvim_config(scenes_dir, "stage=oracle,task=colorization,quantizer=fsq,context=off")
  final = train_and_evaluate(config, tmp_path / "one")
  assert final == _final_metrics(tmp_path / "one") and final["codebook/count"] == 4 * 4 * 4
  config_two = tiny_uvim_config(scenes_dir, "stage=lm,task=colorization,quantizer=fsq,context=off")
  config_two.tokenizer_workdir = str(tmp_path / "one")
  train_and_evaluate(config_two, tmp_path / "two")
  with pytest.raises(ValueError, match=r"metric 'rfid' does not apply to task 'uvim_lm \(colorization\)'"):
    evaluate(tmp_path / "two", ("rfid",), 4)
  results = evaluate(tmp_path / "two", ("color_fid",), 4, cache_dir=tmp_path / "cache")
  assert results["color_fid/num_images"] == 4 and results["step"] == 2

  run = load_run(tmp_path / "two")
  images = next(run.pipeline.eval_batches())["image"][:4]
  outputs, _ = jax.jit(run.task.predict_outputs)(run.state, run.constants, images)
  colours = np.clip(np.asarray(outputs, np.float64), -1, 1)
  np.testing.assert_allclose(
    results["color_fid"], fid_scipy(inception_pool(images), inception_pool(colours)), rtol=2e-3
  )

  # ColTran's protocol, scaled down: the colourings of images 0-1 against the disjoint images 2-3, both
  # area-resized to 32 px (2x2 block means) and rounded to 8-bit levels.
  run.config.uvim.fid_reference_offset, run.config.uvim.fid_size = 2, 32
  results = colorization_fid(run, FeatureExtractor(run.mesh), 2, cache_dir=tmp_path / "cache")

  def coltran(x):
    pooled = np.asarray(x, np.float64).reshape(-1, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    return np.round((pooled + 1) * 127.5) / 127.5 - 1

  # Two images make a rank-1 covariance, where scipy's sqrtm is ill-conditioned: the Frechet distance of
  # the same code compares only which images and pixels went in.
  expected = run_eval._fid(inception_pool(coltran(images[2:4])), inception_pool(coltran(colours[:2])))
  np.testing.assert_allclose(results["color_fid"], expected, rtol=2e-3)
  with pytest.raises(ValueError, match="num_images = 3 would overlap the reference images"):
    colorization_fid(run, FeatureExtractor(run.mesh), 3)


@pytest.mark.parametrize("task", ["depth", "panoptic", "colorization"])
def test_paper_stage_one_matches_big_vision(task):
  c = get_config(f"stage=oracle,task={task},quantizer=vq,run=paper")
  m, q, o = c.model, c.quantizer, c.optimizer
  assert (c.data.image_size, m.patch_size, m.code_grid) == (512, 16, 16)
  assert c.data.resize_mode == "squash"  # big_vision's pp_eval: resize(512)
  assert c.data.random_crop == "inception"  # big_vision's training: inception_box, crop_box, resize(512)
  assert c.data.train_split == {"depth": "train"}.get(task, "train[4096:]")  # big_vision's held-out 4096
  assert (m.width, m.num_heads, m.mlp_dim, m.oracle_depth, m.base_depth) == (768, 12, 3072, 6, 12)
  assert m.context and m.code_dropout == "random" and c.batch_size == 1024
  assert (q.kind, q.codebook_size, q.vq_dim, q.split) == ("vq_uvim", 4096, 768, True)
  task_obj = build_task(c)
  vq = task_obj.model.quantizer
  assert (vq.ema_decay, vq.split_min_count, vq.commitment_cost) == (0.995, 0.1, 0.0)
  lr, wd = {"depth": (1e-3, 1e-5), "panoptic": (4e-4, 4e-5), "colorization": (4e-4, 4e-5)}[task]
  assert (o.learning_rate, o.warmup_steps, o.grad_clip_norm, o.b2, o.schedule) == (
    lr,
    4000,
    1.0,
    0.95,
    "cosine",
  )
  assert o.weight_decay * o.learning_rate == pytest.approx(wd)
  fsq = get_config(f"stage=oracle,task={task},quantizer=fsq,run=paper")
  assert tuple(build_task(fsq).model.quantizer.levels) == (7, 5, 5, 5, 5)
  nosplit = build_task(get_config(f"stage=oracle,task={task},quantizer=vq_nosplit,run=paper"))
  assert nosplit.model.quantizer.split_min_count is None
  no_context = get_config(f"stage=oracle,task={task},context=off,run=paper")
  assert not build_task(no_context).model.base_context and not build_task(no_context).model.oracle_context
  if task == "depth":
    assert (c.uvim.depth_bins, c.uvim.min_depth, c.uvim.max_depth) == (256, 1e-3, 10.0)
    assert task_obj.model.output_channels == 256
  if task == "panoptic":
    assert task_obj.model.output_channels == 134 + 100


@pytest.mark.parametrize("task", ["depth", "panoptic", "colorization"])
def test_paper_stage_two_matches_big_vision(task):
  c = get_config(f"stage=lm,task={task},quantizer=vq,run=paper")
  v, o = c.vtt, c.optimizer
  assert (v.width, v.depth, v.num_heads, v.mlp_dim, v.patch_size) == (1024, 24, 16, 4096, 16)
  assert (o.learning_rate, o.warmup_steps, c.batch_size) == (1e-3, 4000, 512)
  assert o.weight_decay * o.learning_rate == pytest.approx(1e-6)


def test_full_size_stages_build_without_allocating():
  c = get_config("stage=oracle,task=depth,quantizer=fsq,run=paper")
  task = build_task(c)
  images = jax.ShapeDtypeStruct((1, 512, 512, 3), jnp.float32)
  state = jax.eval_shape(task.init, jax.random.key(0), {"image": images})
  assert 80e6 < sum(math.prod(p.shape) for p in jax.tree.leaves(state.params)) < 300e6
  variables = {"params": state.params, **state.model_state}
  c2 = get_config("stage=lm,task=depth,quantizer=fsq,run=paper")
  task2 = build_uvim_stage_two_task(c2, variables)
  assert (task2.model.codebook_size, task2.model.seq_len) == (4375, 256)
  state2 = jax.eval_shape(task2.init, jax.random.key(0), {"image": images})
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(state2.params)) > 500e6
