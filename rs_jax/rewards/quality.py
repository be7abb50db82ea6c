"""Realism beside reward: a Fréchet distance in a fixed random-feature space (an FID without Inception).

Images are embedded by a small random convolutional network whose weights are a fixed function
of a seed (``random_feature_params``), and a set of images is summarized by the mean and covariance
of its features. The Fréchet distance between two such Gaussians,

    d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½),

compares generated images with the training images, as FID does with Inception features (the
matrix square root is ``scipy.linalg.sqrtm``, as in the reference FID code). Lower is better; only
distances computed from the same number of samples, features and seed are comparable.

For a λ sweep compiled as one program, ``feature_moments`` gives per-sample first and second
moments whose means over the samples are sufficient for the Gaussian (``gaussian_from_moments``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

PyTree = Any


def random_feature_params(key: jax.Array, num_features: int = 32, width: int = 32) -> PyTree:
    """Fixed random weights of the feature network: two 4×4 stride-2 convolutions (3 → width →
    2·width, He-normal) and a random projection of the pooled channels to ``num_features``."""
    keys = jax.random.split(key, 3)
    return {
        "conv1": jax.random.normal(keys[0], (4, 4, 3, width)) * np.sqrt(2.0 / (16 * 3)),
        "conv2": jax.random.normal(keys[1], (4, 4, width, 2 * width)) * np.sqrt(2.0 / (16 * width)),
        "projection": jax.random.normal(keys[2], (4 * width, num_features)) / np.sqrt(4 * width),
    }


def random_features(params: PyTree, images: jax.Array) -> jax.Array:
    """(B, H, W, 3) images in [0, 1] -> (B, F) features: the convolutions with ReLU, then the spatial
    mean and standard deviation of every channel, projected."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3); got shape {images.shape}.")
    hidden = 2.0 * images - 1.0
    for name in ("conv1", "conv2"):
        hidden = jax.lax.conv_general_dilated(
            hidden, params[name], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        hidden = jax.nn.relu(hidden)
    pooled = jnp.concatenate([hidden.mean(axis=(1, 2)), hidden.std(axis=(1, 2))], axis=-1)
    return pooled @ params["projection"]


def feature_moments(features: jax.Array) -> jax.Array:
    """(S, F) features -> (S, F + F²) per-sample [f, vec(f fᵀ)]; their mean over S gives the Gaussian."""
    outer = features[:, :, None] * features[:, None, :]
    return jnp.concatenate([features, outer.reshape(features.shape[0], -1)], axis=-1)


def gaussian_from_moments(mean_moments: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) from the mean of ``feature_moments`` over ``count``
    samples (the (F + F²,) row)."""
    moments = np.asarray(mean_moments, np.float64)
    num_features = round((np.sqrt(1 + 4 * moments.shape[-1]) - 1) / 2)
    if num_features * (num_features + 1) != moments.shape[-1]:
        raise ValueError(f"{moments.shape[-1]} moments are not F + F² for any F.")
    if count < 2:
        raise ValueError(f"A covariance needs at least 2 samples; got {count}.")
    mean = moments[:num_features]
    second = moments[num_features:].reshape(num_features, num_features)
    covariance = (second - np.outer(mean, mean)) * count / (count - 1)
    return mean, (covariance + covariance.T) / 2


def gaussian_from_features(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of (S, F) features."""
    values = np.asarray(features, np.float64)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"features must be (S >= 2, F); got shape {values.shape}.")
    return values.mean(axis=0), np.cov(values, rowvar=False)


def frechet_distance(mean_a: Any, cov_a: Any, mean_b: Any, cov_b: Any, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b) (≥ 0; 0 for equal Gaussians).

    ``scipy.linalg.sqrtm`` of Σ_a Σ_b; if that product is singular, ``eps``·I is added to both
    covariances first (as the reference FID implementation does).
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != 2 * mean_a.shape:
        raise ValueError(
            f"Gaussians disagree: means {mean_a.shape}, {mean_b.shape}; covariances {cov_a.shape}, "
            f"{cov_b.shape}."
        )
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(root)):
        offset = eps * np.eye(cov_a.shape[0])
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    difference = mean_a - mean_b
    distance = difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root)
    return float(max(distance, 0.0))
