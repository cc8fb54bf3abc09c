"""Pre-tokenised MaskGIT stage II: token records, their loader, scripts.pretokenize in two processes
against the tokenizer applied to the same images, and stage II trained and resumed on tokens."""

import json

import jax
import numpy as np
import pytest

from fsq.data import tokens as tokens_lib
from fsq.train.loop import train_and_evaluate
from tests.test_train import REPO, read_metrics, restore_params, run_two_processes


def _write_folder(folder, tokens, mirrored, files=2, codebook_size=1000):
  """A tokens folder of records whose label is the record's index, split over ``files`` files."""
  dtype = tokens_lib.token_dtype(codebook_size)
  parts = np.array_split(np.arange(len(tokens)), files)
  listed = []
  for i, part in enumerate(parts):
    name = tokens_lib.file_name("train", i, files)
    records = (tokens_lib.encode_record(r, tokens[r], mirrored[r], dtype) for r in part)
    listed.append({"name": name, "num_records": tokens_lib.write_records(folder / name, records)})
  tokens_lib.write_manifest(folder, {"seq_len": tokens.shape[1], "dtype": dtype.str, "files": listed})


def test_token_records_round_trip_and_the_loader_shards_shuffles_and_mirrors(tmp_path):
  rng = np.random.default_rng(0)
  n, seq_len = 40, 6
  tokens = rng.integers(0, 1000, (n, seq_len))
  mirrored = rng.integers(0, 1000, (n, seq_len))
  _write_folder(tmp_path, tokens, mirrored)
  source = tokens_lib.TokenSource.open(tmp_path)
  assert len(source) == n
  label, t, m = tokens_lib.decode_record(source[17], seq_len, np.dtype("<u2"))
  assert label == 17 and (t == tokens[17]).all() and (m == mirrored[17]).all()

  def rows(shard, flip, batches):
    loader = tokens_lib.make_token_loader(
      source,
      batch_size_per_process=4,
      seed=3,
      random_flip=flip,
      worker_count=0,
      read_threads=1,
      prefetch_buffer_size=2,
      process_index=shard,
      process_count=2,
    )
    it = iter(loader)
    out = [next(it) for _ in range(batches)]
    assert all(b["tokens"].dtype == np.int32 and b["tokens"].shape == (4, seq_len) for b in out)
    return np.concatenate([b["label"] for b in out]), np.concatenate([b["tokens"] for b in out])

  # One epoch of each of 2 shards (5 batches of 4): every record exactly once, shuffled.
  labels_0, _ = rows(0, False, 5)
  labels_1, _ = rows(1, False, 5)
  assert sorted(np.concatenate([labels_0, labels_1])) == list(range(n))
  assert list(labels_0) != sorted(labels_0)
  # Unflipped rows are the record's tokens; flipped ones its own tokens or mirror tokens, about half each.
  labels, got = rows(0, False, 10)
  np.testing.assert_array_equal(got, tokens[labels])
  labels, got = rows(0, True, 50)
  plain = (got == tokens[labels]).all(1)
  mirror = (got == mirrored[labels]).all(1)
  assert (plain | mirror).all() and 0.35 < mirror.mean() < 0.65

  with pytest.raises(ValueError, match="stored as uint16"):
    tokens_lib.encode_record(0, np.array([70000]), np.array([0]), np.dtype("<u2"))
  with pytest.raises(ValueError, match=r"has no manifest\.json: run scripts\.pretokenize"):
    tokens_lib.TokenSource.open(tmp_path / "elsewhere")


@pytest.mark.slow
def test_stage_two_trains_and_resumes_on_tokens_made_in_two_processes(tfds_data_dir, tmp_path):
  """scripts.pretokenize (2 processes, one file each) writes exactly the tokenizer's tokens of every image
  and of its mirror image; stage II on them never runs the encoder, resumes bit-identically, and refuses
  tokens of another tokenizer checkpoint."""
  from fsq.data import pipeline
  from fsq.tasks import build_task
  from fsq.train import mesh as mesh_lib
  from fsq.train.data import InputPipeline, batch_spec
  from fsq.train.loop import jit_train_step
  from tests.test_evals import MASKGIT_TINY, _maskgit_config

  train_and_evaluate(_maskgit_config(tfds_data_dir, "tokenizer", checkpoint_every_steps=1), tmp_path / "tok")
  split = "train[:20]"
  stage_two = {**MASKGIT_TINY, "data.data_dir": tfds_data_dir, "tokenizer_workdir": tmp_path / "tok"}
  config_arg = f"--config={REPO}/configs/maskgit.py:stage=transformer,run=cpu,quantizer=fsq"
  args = [config_arg, f"--output={tmp_path / 'tokens'}", f"--split={split}"]
  args += [f"--config.{k}={v}" for k, v in stage_two.items()]
  run_two_processes(args, tmp_path / "logs", "scripts.pretokenize")

  manifest = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
  assert [f["num_records"] for f in manifest["files"]] == [10, 10]
  assert manifest["tokenizer_step"] == 2 and manifest["seq_len"] == 256 and manifest["dtype"] == "<u2"
  # The reference: the same images straight from the pipeline, mirrored in numpy, through the tokenizer.
  config = _maskgit_config(tfds_data_dir, "transformer", tokenizer_workdir=str(tmp_path / "tok"))
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
    c = _maskgit_config(tfds_data_dir, "transformer", tokenizer_workdir=str(tmp_path / "tok"), **extra)
    c.data.tokens_dir, c.data.random_flip, c.num_train_steps = str(tmp_path / "tokens"), True, steps
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
