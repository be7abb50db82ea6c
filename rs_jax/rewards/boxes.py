"""Boxes on the 1000×1000 grid: IoU, area buckets and grounding rewards.

Boxes are ``(..., 4)`` float ``x0, y0, x1, y1`` on the ``rs_jax.models.locations.GRID`` grid
(location tokens, their codec and bins live in ``rs_jax.models.locations``). Everything here is
pure ``jax.numpy`` and jit-able.

>>> import jax.numpy as jnp
>>> box = jnp.array([[100.0, 200.0, 400.0, 300.0]])
>>> area(box), size_bucket(box)
(Array([30000.], dtype=float32), Array([1], dtype=int32))

Size buckets are the paper's (Appendix F): small < 30 000 grid px², medium < 100 000,
large otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rs_jax.models.locations import check_boxes

SIZE_BUCKETS = ("small", "medium", "large")
BUCKET_EDGES = (30_000.0, 100_000.0)  # areas on the 1000×1000 grid; small < 30 000 ≤ medium < 100 000


def area(boxes: jax.Array) -> jax.Array:
    """(..., 4) boxes -> (...) areas on the grid; a box with x1 < x0 or y1 < y0 has area 0."""
    check_boxes(boxes)
    boxes = jnp.asarray(boxes, jnp.float32)
    width = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    height = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return width * height


def iou(boxes: jax.Array, others: jax.Array) -> jax.Array:
    """Intersection over union of paired boxes.

    Args:
      boxes: (..., 4) x0, y0, x1, y1.
      others: (..., 4), the same shape (paired row by row, not all pairs).

    Returns:
      (...) float32 IoU in [0, 1]; 0 when both boxes are empty.
    """
    check_boxes(boxes)
    check_boxes(others, "others")
    if jnp.shape(boxes) != jnp.shape(others):
        raise ValueError(f"iou pairs boxes row by row: shapes {jnp.shape(boxes)} and {jnp.shape(others)}.")
    boxes, others = jnp.asarray(boxes, jnp.float32), jnp.asarray(others, jnp.float32)
    lower = jnp.maximum(boxes[..., :2], others[..., :2])
    upper = jnp.minimum(boxes[..., 2:], others[..., 2:])
    overlap = jnp.maximum(upper - lower, 0.0)
    intersection = overlap[..., 0] * overlap[..., 1]
    union = area(boxes) + area(others) - intersection
    return jnp.where(union > 0, intersection / jnp.where(union > 0, union, 1.0), 0.0)


def size_bucket(boxes: jax.Array) -> jax.Array:
    """(..., 4) boxes -> (...) int32 bucket: 0 small (< 30 000), 1 medium (< 100 000), 2 large."""
    areas = area(boxes)
    return (areas >= BUCKET_EDGES[0]).astype(jnp.int32) + (areas >= BUCKET_EDGES[1]).astype(jnp.int32)


def grounding_hits(predicted: jax.Array, target: jax.Array, threshold: float = 0.5) -> jax.Array:
    """(B, 4), (B, 4) -> (B,) float32 1 where IoU > ``threshold`` (the grounding accuracy), else 0."""
    return (iou(predicted, target) > threshold).astype(jnp.float32)


def size_rewards(predicted: jax.Array, target: jax.Array, threshold: float = 0.5) -> jax.Array:
    """Reward components (B, 3) of the size experts: component k = 1[IoU > threshold] if the
    target's size bucket is k, else 0 (so expert k, μ one-hot at k, learns only on objects of
    size k, as in the paper's Appendix F).

    Args:
      predicted: (B, 4) predicted boxes.
      target: (B, 4) true boxes.
    """
    hits = grounding_hits(predicted, target, threshold)
    return hits[:, None] * jax.nn.one_hot(size_bucket(target), len(SIZE_BUCKETS), dtype=jnp.float32)
