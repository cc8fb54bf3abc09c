"""Pre-tokenised MaskGIT stage II: token records and their loader (scripts.pretokenize and stage II on
tokens are tested end to end in test_maskgit_task)."""

import numpy as np
import pytest

from fsq.data import tokens as tokens_lib


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
  # A file rewritten after its manifest (a rerun that crashed, another process count) is refused.
  name = tokens_lib.file_name("train", 1, 2)
  records = (tokens_lib.encode_record(0, tokens[0], mirrored[0], np.dtype("<u2")) for _ in range(3))
  tokens_lib.write_records(tmp_path / name, records)
  with pytest.raises(ValueError, match="its files hold 23 records, the manifest 40"):
    tokens_lib.TokenSource.open(tmp_path)
