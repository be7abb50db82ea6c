"""Location tokens: the box codec round-trips, the vocabulary keeps its word ids, smoothed bin targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.data.vocab import Vocabulary, with_location_tokens
from rs_jax.models import locations


def test_location_tokens_round_trip():
    key_a, key_b = jax.random.split(jax.random.key(0))
    corners = jax.random.uniform(key_a, (64, 2, 2), maxval=1000.0)
    random_boxes = jnp.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    random_boxes = random_boxes.at[0].set(jnp.array([0.0, 0.0, 1000.0, 999.999]))
    tokens = locations.boxes_to_location_tokens(random_boxes, first_location_id=7)
    assert tokens.dtype == jnp.int32 and int(tokens.min()) >= 7 and int(tokens.max()) <= 7 + 999
    assert tokens[0].tolist() == [7, 7, 7 + 999, 7 + 999]  # 1000.0 falls in the last bin
    back = locations.location_tokens_to_boxes(tokens, first_location_id=7)
    assert float(jnp.abs(back - random_boxes)[1:].max()) <= 0.5 + 1e-4  # half a bin
    every_bin = jnp.arange(1000).reshape(250, 4) + 3
    np.testing.assert_array_equal(
        locations.boxes_to_location_tokens(locations.location_tokens_to_boxes(every_bin, 3), 3), every_bin
    )
    coarse = locations.boxes_to_bins(jnp.array([[0.0, 99.9, 100.0, 1000.0]]), num_bins=10)
    assert coarse.tolist() == [[0, 0, 1, 9]]
    assert jax.random.uniform(key_b).shape == ()  # keys stay explicit


def test_vocabulary_with_location_tokens_keeps_word_ids():
    words = Vocabulary.from_words(["the", "red", "circle"])
    extended, first = with_location_tokens(words, num_bins=5)
    assert first == words.size and extended.size == words.size + 5
    assert extended.id("red") == words.id("red")
    assert extended.words[first : first + 2] == ("<loc_0>", "<loc_1>")
    mask = locations.location_mask(extended.size, first, 5)
    assert mask.sum() == 5 and mask[first:].all()
    with pytest.raises(ValueError, match="already has location tokens"):
        with_location_tokens(extended, num_bins=5)
    with pytest.raises(ValueError, match="do not fit"):
        locations.location_mask(extended.size, first + 1, 5)


def test_gaussian_bin_targets():
    one_hot = locations.gaussian_bin_targets(jnp.array([2, 0]), num_bins=5)
    np.testing.assert_array_equal(one_hot, jax.nn.one_hot(jnp.array([2, 0]), 5))
    smooth = locations.gaussian_bin_targets(jnp.array([[10, 0]]), num_bins=50, sigma=2.0)
    np.testing.assert_allclose(smooth.sum(axis=-1), 1.0, rtol=1e-6)
    assert smooth.shape == (1, 2, 50) and smooth[0, 0].argmax() == 10
    assert smooth[0, 0, 9] == pytest.approx(smooth[0, 0, 11]) and smooth[0, 0, 9] > smooth[0, 0, 8]
    with pytest.raises(ValueError, match="sigma"):
        locations.gaussian_bin_targets(jnp.array([1]), 5, sigma=-1.0)
