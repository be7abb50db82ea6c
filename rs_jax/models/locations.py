"""Location tokens on the 1000×1000 grid (OFA / UnIVAL) and the coordinate codes of the unified models.

Boxes are ``(..., 4)`` float ``x0, y0, x1, y1`` on a ``GRID`` × ``GRID`` grid whatever the
image's pixel size (the scene world draws them so; ``rs_jax.data.refcoco`` converts real
boxes with the image's width and height). A coordinate c ∈ [0, GRID] is quantized into one of
``num_bins`` equal bins, ``bin = clip(floor(c · num_bins / GRID), 0, num_bins − 1)``, and a box
becomes the 4 tokens ``<loc_x0> <loc_y0> <loc_x1> <loc_y1>`` with ids
``first_location_id + bin`` (``rs_jax.data.vocab.with_location_tokens`` appends their words to a
vocabulary). Back from tokens, a coordinate is its bin's centre, so a round trip moves a
coordinate by at most half a bin (0.5 grid units with 1000 bins). Everything here is pure
``jax.numpy`` (the token mask ``numpy``) and jit-able.

>>> import jax.numpy as jnp
>>> box = jnp.array([[100.0, 200.0, 400.0, 300.0]])
>>> tokens = boxes_to_location_tokens(box, first_location_id=10)
>>> tokens
Array([[110, 210, 410, 310]], dtype=int32)
>>> location_tokens_to_boxes(tokens, first_location_id=10)
Array([[100.5, 200.5, 400.5, 300.5]], dtype=float32)

The Fourier codes (``patch_position_codes``, ``location_codes``) give image patches and location
tokens one code of their place on the grid; ``rs_jax.models.unified`` and
``rs_jax.models.bart_unified`` initialize their embeddings with them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

GRID = 1000.0
NUM_BINS = 1000


def check_boxes(boxes: jax.Array, name: str = "boxes") -> None:
    """Raises a ValueError unless ``boxes`` is (..., 4)."""
    if jnp.ndim(boxes) < 1 or jnp.shape(boxes)[-1] != 4:
        raise ValueError(f"{name} must be (..., 4) x0, y0, x1, y1; got shape {jnp.shape(boxes)}.")


def boxes_to_bins(boxes: jax.Array, num_bins: int = NUM_BINS) -> jax.Array:
    """(..., 4) grid coordinates -> (..., 4) int32 bins in [0, num_bins); outside [0, GRID] is clipped."""
    check_boxes(boxes)
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


def fourier_features(coordinates: jax.Array, num_frequencies: int, max_cycles: float = 40.0) -> jax.Array:
    """Sines and cosines of grid coordinates at log-spaced frequencies.

    Args:
      coordinates: (...) positions on the 1000×1000 grid.
      num_frequencies: F frequencies, from 0.5 to ``max_cycles`` periods over the grid.

    Returns:
      (..., 2F) float32 [sin, cos].
    """
    coordinates = jnp.asarray(coordinates, jnp.float32)
    cycles = jnp.geomspace(0.5, max_cycles, num_frequencies).reshape((1,) * coordinates.ndim + (-1,))
    angles = 2.0 * jnp.pi * coordinates[..., None] / GRID * cycles
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def patch_position_codes(image_size: int, patch_size: int, width: int) -> jax.Array:
    """(1, 1 + P, width) ViT position embeddings: zeros for the class token, then each patch
    centre's Fourier features on the 1000×1000 grid (x in the first half of the channels, y in
    the second); ``width`` must be a multiple of 4."""
    side = image_size // patch_size
    centres = (jnp.arange(side, dtype=jnp.float32) + 0.5) * (GRID / side)
    rows, columns = jnp.meshgrid(centres, centres, indexing="ij")
    patches = jnp.concatenate(
        [fourier_features(columns.ravel(), width // 4), fourier_features(rows.ravel(), width // 4)], axis=1
    )
    return jnp.concatenate([jnp.zeros((1, width)), patches])[None]


def location_codes(num_bins: int, width: int, scale: float) -> jax.Array:
    """(num_bins, width) embeddings of the location tokens: ``scale`` × the Fourier features of
    each bin's centre, in both halves (the code of ``patch_position_codes``)."""
    bins = fourier_features(jnp.arange(num_bins) + 0.5, width // 4) * scale
    return jnp.concatenate([bins, bins], axis=1)
