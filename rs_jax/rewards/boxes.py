"""Boxes on the 1000×1000 grid: IoU, area buckets, location tokens and grounding rewards.

Boxes are ``(..., 4)`` float ``x0, y0, x1, y1`` on a ``GRID`` × ``GRID`` grid whatever the
image's pixel size (the scene world draws them so; ``rs_jax.data.refcoco`` converts real
boxes with the image's width and height). Everything here is pure ``jax.numpy`` and jit-able.

Location tokens (OFA / UnIVAL): a coordinate c ∈ [0, GRID] is quantized into one of
``num_bins`` equal bins, ``bin = clip(floor(c · num_bins / GRID), 0, num_bins − 1)``, and a box
becomes the 4 tokens ``<loc_x0> <loc_y0> <loc_x1> <loc_y1>`` with ids
``first_location_id + bin``. Back from tokens, a coordinate is its bin's centre, so a round
trip moves a coordinate by at most half a bin (0.5 grid units with 1000 bins).

>>> import jax.numpy as jnp
>>> box = jnp.array([[100.0, 200.0, 400.0, 300.0]])
>>> area(box), size_bucket(box)
(Array([30000.], dtype=float32), Array([1], dtype=int32))
>>> tokens = boxes_to_location_tokens(box, first_location_id=10)
>>> tokens
Array([[110, 210, 410, 310]], dtype=int32)
>>> location_tokens_to_boxes(tokens, first_location_id=10)
Array([[100.5, 200.5, 400.5, 300.5]], dtype=float32)

Size buckets are the paper's (Appendix F): small < 30 000 grid px², medium < 100 000,
large otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax.data.vocab import Vocabulary

GRID = 1000.0
NUM_BINS = 1000
SIZE_BUCKETS = ("small", "medium", "large")
BUCKET_EDGES = (30_000.0, 100_000.0)  # areas on the 1000×1000 grid; small < 30 000 ≤ medium < 100 000


def _check_boxes(boxes: jax.Array, name: str = "boxes") -> None:
    if jnp.ndim(boxes) < 1 or jnp.shape(boxes)[-1] != 4:
        raise ValueError(f"{name} must be (..., 4) x0, y0, x1, y1; got shape {jnp.shape(boxes)}.")


def area(boxes: jax.Array) -> jax.Array:
    """(..., 4) boxes -> (...) areas on the grid; a box with x1 < x0 or y1 < y0 has area 0."""
    _check_boxes(boxes)
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
    _check_boxes(boxes)
    _check_boxes(others, "others")
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


def boxes_to_bins(boxes: jax.Array, num_bins: int = NUM_BINS) -> jax.Array:
    """(..., 4) grid coordinates -> (..., 4) int32 bins in [0, num_bins); outside [0, GRID] is clipped."""
    _check_boxes(boxes)
    scaled = jnp.floor(jnp.asarray(boxes, jnp.float32) * (num_bins / GRID))
    return jnp.clip(scaled, 0, num_bins - 1).astype(jnp.int32)


def bins_to_boxes(bins: jax.Array, num_bins: int = NUM_BINS) -> jax.Array:
    """(..., 4) bins -> (..., 4) float32 grid coordinates of the bins' centres."""
    return (jnp.asarray(bins, jnp.float32) + 0.5) * (GRID / num_bins)


def boxes_to_location_tokens(
    boxes: jax.Array, first_location_id: int | jax.Array, num_bins: int = NUM_BINS
) -> jax.Array:
    """(..., 4) boxes -> (..., 4) int32 token ids ``first_location_id + bin``."""
    return boxes_to_bins(boxes, num_bins) + jnp.asarray(first_location_id, jnp.int32)


def location_tokens_to_boxes(
    tokens: jax.Array, first_location_id: int | jax.Array, num_bins: int = NUM_BINS
) -> jax.Array:
    """(..., 4) token ids -> (..., 4) boxes; ids outside the location range are clipped into it."""
    bins = jnp.clip(jnp.asarray(tokens, jnp.int32) - first_location_id, 0, num_bins - 1)
    return bins_to_boxes(bins, num_bins)


def location_words(num_bins: int = NUM_BINS) -> tuple[str, ...]:
    """The location tokens' words ``<loc_0>`` … ``<loc_{num_bins-1}>``."""
    return tuple(f"<loc_{index}>" for index in range(num_bins))


def with_location_tokens(vocabulary: Vocabulary, num_bins: int = NUM_BINS) -> tuple[Vocabulary, int]:
    """A vocabulary extended by ``num_bins`` location tokens after its words.

    The words keep their ids, so text encoded with ``vocabulary`` stays valid.

    Returns:
      (extended vocabulary, id of ``<loc_0>``).

    Raises:
      ValueError: if ``vocabulary`` already holds location tokens.
    """
    if "<loc_0>" in vocabulary:
        raise ValueError("The vocabulary already has location tokens.")
    return Vocabulary(vocabulary.words + location_words(num_bins)), vocabulary.size


def location_mask(vocab_size: int, first_location_id: int, num_bins: int = NUM_BINS) -> np.ndarray:
    """(V,) bool, True at the location tokens: the only tokens a grounding policy may emit."""
    if first_location_id + num_bins > vocab_size:
        raise ValueError(
            f"Location tokens {first_location_id}..{first_location_id + num_bins - 1} do not fit a "
            f"vocabulary of {vocab_size}."
        )
    mask = np.zeros((vocab_size,), bool)
    mask[first_location_id : first_location_id + num_bins] = True
    return mask


def gaussian_bin_targets(bins: jax.Array, num_bins: int = NUM_BINS, sigma: float = 0.0) -> jax.Array:
    """Target distributions over bins for a cross-entropy on location tokens.

    ``sigma = 0`` gives one-hot targets (the plain cross-entropy on the true tokens); ``sigma > 0``
    spreads the mass over neighbouring bins, ∝ exp(−(b − b*)² / 2σ²), which tells a small model
    that near misses are better than far ones (a coordinate-aware label smoothing).

    Args:
      bins: (...) int true bins.
      sigma: standard deviation in bins.

    Returns:
      (..., num_bins) float32 distributions.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 bins, got {sigma}.")
    bins = jnp.asarray(bins)
    if sigma == 0:
        return jax.nn.one_hot(bins, num_bins, dtype=jnp.float32)
    grid = jnp.arange(num_bins, dtype=jnp.float32).reshape((1,) * bins.ndim + (num_bins,))
    distance = grid - bins.astype(jnp.float32)[..., None]
    return jax.nn.softmax(-(distance**2) / (2.0 * sigma**2), axis=-1)


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
