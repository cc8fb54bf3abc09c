"""Codebook usage accumulator: hand-computed statistics, merging equals counting the whole."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsq import metrics


def test_statistics_of_a_hand_computed_case():
  # Codes 0 and 1 used twice each, codes 2 and 3 never: 1 bit of entropy, perplexity 2.
  usage = metrics.CodebookUsage.create(4).add(np.asarray([0, 1, 1, 0]))
  stats = usage.summary()
  assert stats == pytest.approx(
    {"usage": 0.5, "perplexity": 2.0, "entropy_bits": 1.0, "max_ratio": 0.5, "zeros_ratio": 0.5, "count": 4.0}
  )
  skewed = metrics.usage_statistics(np.asarray([3, 1, 0, 0, 0, 0, 0, 0]))
  entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
  assert skewed["entropy_bits"] == pytest.approx(entropy / math.log(2))
  assert skewed["perplexity"] == pytest.approx(math.exp(entropy))
  assert skewed["max_ratio"] == pytest.approx(0.75)
  assert skewed["usage"] == pytest.approx(0.25)


@given(st.lists(st.integers(0, 2**16 - 1), min_size=0, max_size=300), st.integers(0, 300))
def test_merging_two_halves_equals_counting_the_whole(values, cut):
  idx = np.asarray(values, np.int64)
  whole = metrics.CodebookUsage.create(2**16).add(idx)
  halves = (
    metrics.CodebookUsage.create(2**16)
    .add(idx[:cut])
    .merge(metrics.CodebookUsage.create(2**16).add(idx[cut:]))
  )
  np.testing.assert_array_equal(halves.counts, whole.counts)
  np.testing.assert_array_equal(whole.counts[0], np.bincount(idx, minlength=2**16))
  assert whole.summary() == halves.summary()


def test_groups_count_each_stage_separately_and_accept_jax_arrays():
  indices = jnp.asarray([[0, 3], [0, 2], [1, 3]])  # two stages of a residual quantizer
  usage = metrics.CodebookUsage.create(4, num_groups=2).add(indices)
  np.testing.assert_array_equal(usage.counts, [[2, 1, 0, 0], [0, 0, 1, 2]])
  stats = usage.summary()
  assert stats["usage_per_group"] == [0.5, 0.5]
  assert stats["max_ratio"] == pytest.approx((2 / 3 + 2 / 3) / 2)
  assert usage.merge_across_processes().counts.tolist() == usage.counts.tolist()


def test_bad_indices_and_sizes_raise_value_error():
  usage = metrics.CodebookUsage.create(10)
  with pytest.raises(ValueError, match=r"\[0, 10\), got 10"):
    usage.add(np.asarray([1, 10]))
  with pytest.raises(ValueError, match="got -2"):
    usage.add(np.asarray([-2]))
  with pytest.raises(ValueError, match="integers"):
    usage.add(np.asarray([1.0]))
  with pytest.raises(ValueError, match="codebook_size"):
    metrics.CodebookUsage.create(2**25)
  with pytest.raises(ValueError, match="num_groups = 2"):
    metrics.CodebookUsage.create(10, num_groups=2).add(np.zeros((4, 3), np.int32))
  with pytest.raises(ValueError, match="merge"):
    usage.merge(metrics.CodebookUsage.create(11))


def test_device_code_counts_equal_host_counting_with_padding_weights():
  rng = np.random.default_rng(0)
  idx = rng.integers(0, 7, size=(6, 3, 3, 2))
  weights = np.asarray([1, 1, 0, 1, 0, 1])
  counts = metrics.code_counts(jnp.asarray(idx), 7, num_groups=2, weights=jnp.asarray(weights))
  host = metrics.CodebookUsage.create(7, num_groups=2).add(idx[weights == 1])
  np.testing.assert_array_equal(counts, host.counts)
  np.testing.assert_array_equal(metrics.CodebookUsage.create(7, 2).add_counts(counts).counts, host.counts)
