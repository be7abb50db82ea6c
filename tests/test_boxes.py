"""Box rewards: IoU, areas and size buckets, grounding rewards (hand-checked)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
