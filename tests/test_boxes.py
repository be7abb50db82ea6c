"""Box utilities: IoU, areas and size buckets, location tokens, grounding rewards (hand-checked)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.data.vocab import Vocabulary
from rs_jax.rewards import boxes


def test_iou_by_hand_and_under_jit():
    first = jnp.array(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0]]
    )
    second = jnp.array(
        [[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 3.0, 3.0], [5.0, 5.0, 5.0, 5.0]]
    )
    # overlap 25, union 100 + 100 - 25; identical; disjoint; both empty
    expected = [25.0 / 175.0, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(boxes.iou(first, second), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(boxes.iou)(second, first), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="row by row"):
        boxes.iou(first, second[:2])
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        boxes.iou(first[:, :3], second[:, :3])


def test_area_and_size_buckets_at_the_paper_edges():
    widths = jnp.array([100.0, 100.0, 100.0, 100.0, 100.0])
    heights = jnp.array([299.99, 300.0, 999.99, 1000.0, -5.0])
    grid_boxes = jnp.stack([jnp.zeros(5), jnp.zeros(5), widths, heights], axis=1)
    np.testing.assert_allclose(
        boxes.area(grid_boxes), [29_999.0, 30_000.0, 99_999.0, 100_000.0, 0.0], rtol=1e-6
    )
    assert boxes.size_bucket(grid_boxes).tolist() == [0, 1, 1, 2, 0]


def test_location_tokens_round_trip():
    key_a, key_b = jax.random.split(jax.random.key(0))
    corners = jax.random.uniform(key_a, (64, 2, 2), maxval=1000.0)
    random_boxes = jnp.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    random_boxes = random_boxes.at[0].set(jnp.array([0.0, 0.0, 1000.0, 999.999]))
    tokens = boxes.boxes_to_location_tokens(random_boxes, first_location_id=7)
    assert tokens.dtype == jnp.int32 and int(tokens.min()) >= 7 and int(tokens.max()) <= 7 + 999
    assert tokens[0].tolist() == [7, 7, 7 + 999, 7 + 999]  # 1000.0 falls in the last bin
    back = boxes.location_tokens_to_boxes(tokens, first_location_id=7)
    assert float(jnp.abs(back - random_boxes)[1:].max()) <= 0.5 + 1e-4  # half a bin
    every_bin = jnp.arange(1000).reshape(250, 4) + 3
    np.testing.assert_array_equal(
        boxes.boxes_to_location_tokens(boxes.location_tokens_to_boxes(every_bin, 3), 3), every_bin
    )
    coarse = boxes.boxes_to_bins(jnp.array([[0.0, 99.9, 100.0, 1000.0]]), num_bins=10)
    assert coarse.tolist() == [[0, 0, 1, 9]]
    assert jax.random.uniform(key_b).shape == ()  # keys stay explicit


def test_vocabulary_with_location_tokens_keeps_word_ids():
    words = Vocabulary.from_words(["the", "red", "circle"])
    extended, first = boxes.with_location_tokens(words, num_bins=5)
    assert first == words.size and extended.size == words.size + 5
    assert extended.id("red") == words.id("red")
    assert extended.words[first : first + 2] == ("<loc_0>", "<loc_1>")
    mask = boxes.location_mask(extended.size, first, 5)
    assert mask.sum() == 5 and mask[first:].all()
    with pytest.raises(ValueError, match="already has location tokens"):
        boxes.with_location_tokens(extended)
    with pytest.raises(ValueError, match="do not fit"):
        boxes.location_mask(extended.size, first + 1, 5)


def test_gaussian_bin_targets():
    one_hot = boxes.gaussian_bin_targets(jnp.array([2, 0]), num_bins=5)
    np.testing.assert_array_equal(one_hot, jax.nn.one_hot(jnp.array([2, 0]), 5))
    smooth = boxes.gaussian_bin_targets(jnp.array([[10, 0]]), num_bins=50, sigma=2.0)
    np.testing.assert_allclose(smooth.sum(axis=-1), 1.0, rtol=1e-6)
    assert smooth.shape == (1, 2, 50) and smooth[0, 0].argmax() == 10
    assert smooth[0, 0, 9] == pytest.approx(smooth[0, 0, 11]) and smooth[0, 0, 9] > smooth[0, 0, 8]
    with pytest.raises(ValueError, match="sigma"):
        boxes.gaussian_bin_targets(jnp.array([1]), 5, sigma=-1.0)


def test_size_rewards_reward_only_the_target_bucket():
    targets = jnp.array(
        [
            [0.0, 0.0, 100.0, 100.0],
            [0.0, 0.0, 200.0, 200.0],
            [0.0, 0.0, 500.0, 500.0],
            [0.0, 0.0, 500.0, 500.0],
        ]
    )
    predictions = targets.at[3].set(jnp.array([600.0, 600.0, 900.0, 900.0]))  # the last one misses
    rewards = jax.jit(boxes.size_rewards)(predictions, targets)
    np.testing.assert_array_equal(rewards, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    assert boxes.grounding_hits(predictions, targets).tolist() == [1.0, 1.0, 1.0, 0.0]
