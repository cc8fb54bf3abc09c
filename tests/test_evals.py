"""Inception features over batches, cached reference sets, and evaluating a trained run into results.json."""

import json
import shutil

import chex
import jax
import numpy as np
import pytest

from configs.maskgit import get_config as get_maskgit_config
from fsq import weights
from fsq.evals import sample_metrics
from fsq.evals.features import FeatureExtractor, reference_features, to_inception_input
from fsq.tasks import evaluate as run_eval
from fsq.tasks import restore_stage_one, train_and_evaluate
from fsq.tasks.evaluate import evaluate, load_run, real_floor, sample_batches
from fsq.train.checkpoint import restore_step_to_host, restore_to_host, saved_steps
from fsq.train.data import InputPipeline
from fsq.train.mesh import make_mesh
from fsq.train.stages import resolve
from fsq.train.writers import read_config, write_config
from tests.helpers import (
  fid_scipy,
  inception_pool,
  patched,
  tiny_autoencoder_config,
  tiny_maskgit_config,
)

needs_inception = pytest.mark.skipif(
  not weights.path_of("inception_fid").exists(), reason="run `python -m scripts.fetch_weights inception_fid`"
)


def test_inception_input_repeats_grey_and_rounds_to_8_bit_levels():
  rng = np.random.default_rng(0)
  grey = rng.uniform(-1.2, 1.2, (2, 4, 4, 1)).astype(np.float32)
  out = np.asarray(to_inception_input(grey))
  levels = np.round((np.clip(grey.astype(np.float64), -1, 1) + 1) * 127.5)
  np.testing.assert_allclose(out, np.repeat(levels / 127.5 - 1, 3, axis=-1), atol=1e-6)
  with pytest.raises(ValueError, match="1 or 3 channels"):
    to_inception_input(np.zeros((1, 4, 4, 2)))


@pytest.fixture(scope="module")
def extractor():
  if not weights.path_of("inception_fid").exists():
    pytest.skip("run `python -m scripts.fetch_weights inception_fid`")
  return FeatureExtractor(make_mesh(-1, 1, 1))


@needs_inception
def test_extract_keeps_valid_rows_in_order_and_caches_references(extractor, tmp_path):
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (16, 16, 16, 1)).astype(np.float32)
  masks = [np.array([1, 0, 1, 1, 0, 1, 1, 1], np.float32), np.ones(8, np.float32)]
  batches = [{"image": images[:8], "mask": masks[0]}, {"image": images[8:], "mask": masks[1]}]
  feats = extractor.extract(iter(batches), 8)
  valid = images[np.concatenate(masks).astype(bool)][:8]
  # Reference: the network applied directly, one image at a time, without the extractor's sharding.
  direct = [inception_pool(x[None])[0] for x in valid]
  np.testing.assert_allclose(feats, np.stack(direct), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="ran out after 14"):
    extractor.extract(iter(batches), 20)

  config = tiny_autoencoder_config("unused").data
  first = reference_features(extractor, config, iter(batches), "test", 6, cache_dir=tmp_path)
  np.testing.assert_array_equal(first, feats[:6])

  def exhausted():
    raise AssertionError("the cached reference must not read the dataset")
    yield

  np.testing.assert_array_equal(
    reference_features(extractor, config, exhausted(), "test", 6, tmp_path), first
  )
  assert len(list(tmp_path.glob("*.npz"))) == 1
  # Another order of the split (sharded evaluation) or other weights are other references: computed anew.
  reversed_batches = [{"image": b["image"][::-1], "mask": b["mask"][::-1]} for b in batches]
  other = reference_features(extractor, config, iter(reversed_batches), "test", 6, tmp_path, order="2 shards")
  np.testing.assert_allclose(other[0], feats[5], rtol=1e-5, atol=1e-6)  # image 7: the 6th valid row
  retrained = FeatureExtractor(extractor.mesh, jax.tree.map(lambda w: w * 1.0, extractor.params))
  assert retrained.weights_digest != extractor.weights_digest == weights.KNOWN["inception_fid"][1]
  assert reference_features(retrained, config, iter(batches), "test", 6, tmp_path).shape == (6, 2048)
  assert len(list(tmp_path.glob("*.npz"))) == 3


@pytest.mark.slow
@needs_inception
def test_evaluate_writes_results_with_reconstruction_fid(maskgit_runs, tmp_path):
  """On the module's tiny tokenizer (copied): results.json without and with rFID, and rFID recomputed
  from the restored model's reconstructions (its EMA parameters) with scipy."""
  copy_runs(maskgit_runs, tmp_path)
  workdir = tmp_path / "tok"
  final = json.loads((workdir / "final_metrics.json").read_text())
  assert evaluate(workdir, (), num_images=10) == {**final, "step": 2.0}  # no metrics: no model loaded
  assert json.loads((workdir / "results.json").read_text()) == {**final, "step": 2.0}
  results = evaluate(workdir, ("rfid",), num_images=10, cache_dir=tmp_path / "cache")
  saved = json.loads((workdir / "results.json").read_text())
  assert saved == results and saved["step"] == 2 and {k: saved[k] for k in final} == final

  # Independent reference: the first 10 test images and their reconstructions by the restored model,
  # through the network directly, and FID with scipy's matrix square root.
  run = load_run(workdir)
  images = next(run.pipeline.eval_batches())["image"][:8]
  images = np.concatenate([images, list(run.pipeline.eval_batches(2))[1]["image"][:2]])
  variables = jax.device_get(run.task.eval_variables(run.state))
  recon = np.clip(np.asarray(run.task.model.apply(variables, images, train=False)[0]), -1, 1)
  np.testing.assert_allclose(
    saved["rfid"], fid_scipy(inception_pool(images), inception_pool(recon)), rtol=2e-3
  )

  # train_usage: the codes of the training split's images (here its first 40), counted in numpy from the
  # restored model's indices, against what the evaluation step counted over the split.
  config = read_config(workdir)
  config.data.train_split = "train[:40]"
  write_config(workdir, config)
  usage = evaluate(workdir, ("train_usage",), num_images=10)
  config.data.eval_split = "train[:40]"  # the same 40 images, read as evaluation reads them (no flips)
  images = next(InputPipeline(config.data, 40, 0).eval_batches())["image"]
  _, aux = run.task.model.apply(variables, images, train=False)
  counts = np.bincount(np.asarray(aux["indices"]).ravel(), minlength=run.task.codebook_shape[0])
  p = counts[counts > 0] / counts.sum()
  assert usage["codebook/train_images"] == 40
  assert usage["codebook/usage_train"] == pytest.approx((counts > 0).mean(), abs=1e-12)
  assert usage["codebook/perplexity_train"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
  assert usage["psnr"] == final["psnr"]  # the evaluation split's metrics stay as trained


def test_evaluate_rejects_bad_requests_before_loading(tmp_path):
  with pytest.raises(ValueError, match=r"metrics must be among .*\['psnr'\]"):
    evaluate(tmp_path, ("psnr",), 10)
  with pytest.raises(ValueError, match="num_images must be >= 2, got 1"):
    evaluate(tmp_path, ("rfid",), 1)
  with pytest.raises(FileNotFoundError, match=r"final_metrics\.json is missing"):
    evaluate(tmp_path, ("rfid",), 10)


@pytest.fixture(scope="module")
def maskgit_runs(tfds_data_dir, tiny_tokenizer, tmp_path_factory):
  """A tiny MaskGIT stage I (``tok``) and stage II (``maskgit``) trained 2 steps each, once for the module.
  Tests copy it (``copy_runs``) before they change it."""
  root = tmp_path_factory.mktemp("maskgit_runs")
  shutil.copytree(tiny_tokenizer, root / "tok")
  config = tiny_maskgit_config(tfds_data_dir, "transformer", tokenizer_workdir=str(root / "tok"))
  train_and_evaluate(config, root / "maskgit")
  return root


def copy_runs(root, to):
  """Copies both runs into ``to``; the copied stage II's recorded config names the copied stage I."""
  shutil.copytree(root, to, dirs_exist_ok=True)
  config = read_config(to / "maskgit")
  config.tokenizer_workdir = str(to / "tok")
  write_config(to / "maskgit", config)


@pytest.mark.slow
@needs_inception
def test_evaluate_stage_two_sampling_fid_and_compression(maskgit_runs, tmp_path):
  copy_runs(maskgit_runs, tmp_path)
  with pytest.raises(ValueError, match="metric 'rfid' does not apply to task 'transformer'"):
    evaluate(tmp_path / "maskgit", ("rfid",), 8)
  results = evaluate(tmp_path / "maskgit", ("fid", "compression"), 8, cache_dir=tmp_path / "cache")
  assert results["fid"] > 0 and 0 <= results["precision"] <= 1 and 0 <= results["recall"] <= 1
  # Two steps at a warm-up learning rate leave the 0.02-std initialisation nearly uniform over the 1000
  # codes: log2(1000) = 9.97 bits per token; the range coder's stream costs at most a word more per batch.
  bits = results["compression/bits_per_token"]
  assert abs(bits - np.log2(1000)) < 0.3, bits
  coded = results["compression/coded_bits_per_token"]
  assert bits - 0.01 <= coded <= bits + 64 / (8 * 256), (bits, coded)
  run = load_run(tmp_path / "maskgit")
  labels = np.concatenate([b["label"] for b in sample_batches(run, 24, 8)])
  np.testing.assert_array_equal(labels, np.arange(24) % 10)
  with pytest.raises(ValueError, match="batch_size = 10 must divide over the mesh's 8 batch shards"):
    next(sample_batches(run, 20, 10))

  # The paper's protocol compares samples with the training split: the reference features are those of
  # the first training images, the same as a run whose evaluation split is the training split reads.
  as_eval = load_run(tmp_path / "maskgit")
  extractor = FeatureExtractor(run.mesh)
  train = run_eval._reference(run, extractor, 8, tmp_path / "cache", "train")
  as_eval.config.data.eval_split = "train"
  as_eval.pipeline = InputPipeline(as_eval.config.data, as_eval.config.batch_size, as_eval.config.seed)
  np.testing.assert_allclose(
    train, run_eval._reference(as_eval, extractor, 8, tmp_path / "cache2"), rtol=1e-5
  )
  assert not np.allclose(train, run_eval._reference(run, extractor, 8, tmp_path / "cache"))
  assert get_maskgit_config("stage=transformer,run=imagenet256").fid_reference_split == "train"


@pytest.mark.slow
def test_stage_two_keeps_the_tokenizer_it_trained_on_when_stage_one_trains_on(
  maskgit_runs, tfds_data_dir, tmp_path
):
  """Stage II pins stage I's newest step when it starts (config.json); resuming it and evaluating it
  restore that step even after stage I has saved newer ones. A missing step is named."""
  copy_runs(maskgit_runs, tmp_path)
  tokenizer = tiny_maskgit_config(tfds_data_dir, "tokenizer")
  assert json.loads((tmp_path / "maskgit" / "config.json").read_text())["tokenizer_step"] == 2
  train_and_evaluate(patched(tokenizer, {"num_train_steps": 4}), tmp_path / "tok")  # stage I trains on
  assert saved_steps(tmp_path / "tok" / "checkpoints") == [1, 2, 4]
  resumed = tiny_maskgit_config(tfds_data_dir, "transformer", tokenizer_workdir=str(tmp_path / "tok"))
  assert resolve(resumed, tmp_path / "maskgit").tokenizer_step == 2
  assert resumed.tokenizer_step == 0  # the caller's config is left as it is
  resumed = resolve(resumed, tmp_path / "maskgit")
  kept = load_run(tmp_path / "maskgit").task.tokenizer_variables["params"]
  for step, same in ((2, True), (4, False)):
    ema = restore_to_host(tmp_path / "tok" / "checkpoints" / str(step))["ema_params"]
    close = jax.tree.map(lambda a, b: np.allclose(a, b, rtol=0, atol=0), kept, ema)
    assert all(jax.tree.leaves(close)) is same, step
  # Stage II reads only what it needs of stage I: the EMA parameters and model state, equal to those of a
  # whole-state restore, without the optimizer moments or the discriminator.
  whole = restore_to_host(tmp_path / "tok" / "checkpoints" / "2")
  part = restore_stage_one(resumed)  # the frozen variables: the EMA parameters (the tokenizer family's)
  assert set(part) == {"params", *whole["model_state"]}
  chex.assert_trees_all_equal(part["params"], whole["ema_params"])
  with pytest.raises(ValueError, match=r"has no \['emma_params'\]; it has \[.*'ema_params'"):
    restore_step_to_host(tmp_path / "tok" / "checkpoints", 2, ("emma_params",))
  resumed.tokenizer_step = 3
  with pytest.raises(ValueError, match=r"config.tokenizer_step = 3: no checkpoint of step 3 .* \[1, 2, 4\]"):
    restore_stage_one(resumed)


def test_stage_two_without_a_stage_one_checkpoint_names_the_workdir(tmp_path):
  config = get_maskgit_config("stage=transformer,run=cpu,quantizer=fsq")
  config.tokenizer_workdir = str(tmp_path / "tok")
  with pytest.raises(
    ValueError, match=r"config.tokenizer_workdir = '.*tok': no checkpoint in .*tok/checkpoints"
  ):
    resolve(config, tmp_path / "maskgit")
  with pytest.raises(ValueError, match=r"config.tokenizer_step = 0: no checkpoint in .*tok/checkpoints"):
    restore_stage_one(config)


@pytest.mark.slow
@needs_inception
def test_real_floor_scores_the_first_images_against_the_next(extractor, tfds_data_dir, tmp_path):
  config = tiny_maskgit_config(tfds_data_dir, "tokenizer")
  floor = real_floor(config, 4, cache_dir=tmp_path, extractor=extractor)
  # Reference: the first 8 test images in the split's order, through the network directly, one at a time.
  batch = next(InputPipeline(config.data, 8, 0).eval_batches())
  images = batch["image"][batch["mask"] == 1][:8]
  direct = np.stack([inception_pool(x[None])[0] for x in images])
  assert floor["fid"] == pytest.approx(run_eval._fid(direct[:4], direct[4:]), rel=1e-3)
  expected = sample_metrics.precision_recall(direct[:4], direct[4:], k=3)
  assert (floor["precision"], floor["recall"]) == pytest.approx(expected) and floor["num_images"] == 4
  with pytest.raises(ValueError, match="num_images must be >= 2, got 1"):
    real_floor(config, 1)


def test_a_runs_recorded_config_reads_back(tmp_path):
  config = get_maskgit_config("stage=tokenizer,run=cpu,quantizer=fsq")
  config.data.eval_split = "test[:7]"
  write_config(tmp_path, config)
  read = read_config(tmp_path)
  assert read.data.eval_split == "test[:7]" and read.data.name == config.data.name
  assert list(read.quantizer.levels) == list(config.quantizer.levels)
  with pytest.raises(FileNotFoundError, match=r"nowhere/config.json is missing: is .*nowhere a training"):
    read_config(tmp_path / "nowhere")
