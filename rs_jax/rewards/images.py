"""Image rewards: statistics that pull in different directions, and learned scorers (MLP heads).

Every reward maps a batch of images (B, H, W, 3) in [0, 1] to (B,) scores, jit-able; none needs a
gradient (reward-weighted regression only ranks and weights images).

Statistics (offline, no model):

* ``colourfulness``: Hasler & Süsstrunk (2003), M = σ_rgyb + 0.3 μ_rgyb with rg = R − G and
  yb = (R + G)/2 − B, on the [0, 1] scale (their 0–255 values / 255).
* ``brightness``: mean luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B).
* ``contrast``: RMS contrast, the standard deviation of the luma.
* ``skin``: an "nsfw-like" antagonist: the fraction of pixels a classic RGB skin-colour rule
  accepts (Kovac et al. 2003: R > 95, G > 40, B > 20, max − min > 15, |R − G| > 15, R > G,
  R > B on 0–255). It favours brown and pink, against bright and colourful images.

Learned scorers (like the paper's ava / cafe aesthetic predictors: an MLP on CLIP image
embeddings): ``LearnedScorer`` = a feature function and an MLP head read from a file
(``save_mlp_head`` / ``load_mlp_head``). Features are CLIP image embeddings of a local
``FlaxCLIPVisionModelWithProjection`` directory (``clip_image_features``) or any
``images -> (B, F)`` function, e.g. ``rs_jax.rewards.quality.random_features``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

PyTree = Any
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _check_images(images: jax.Array) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3) in [0, 1]; got shape {images.shape}.")


def colourfulness(images: jax.Array) -> jax.Array:
    """(B, H, W, 3) in [0, 1] -> (B,) Hasler–Süsstrunk colourfulness (0 for grey images)."""
    _check_images(images)
    red, green, blue = images[..., 0], images[..., 1], images[..., 2]
    rg = (red - green).reshape(images.shape[0], -1)
    yb = (0.5 * (red + green) - blue).reshape(images.shape[0], -1)
    spread = jnp.sqrt(rg.var(axis=1) + yb.var(axis=1))
    mean = jnp.sqrt(rg.mean(axis=1) ** 2 + yb.mean(axis=1) ** 2)
    return spread + 0.3 * mean


def luma(images: jax.Array) -> jax.Array:
    """(B, H, W, 3) -> (B, H, W) BT.601 luma."""
    return images @ jnp.asarray(_LUMA)


def brightness(images: jax.Array) -> jax.Array:
    """(B, H, W, 3) in [0, 1] -> (B,) mean luma in [0, 1]."""
    _check_images(images)
    return luma(images).mean(axis=(1, 2))


def contrast(images: jax.Array) -> jax.Array:
    """(B, H, W, 3) in [0, 1] -> (B,) RMS contrast (standard deviation of the luma)."""
    _check_images(images)
    return luma(images).reshape(images.shape[0], -1).std(axis=1)


def skin(images: jax.Array) -> jax.Array:
    """(B, H, W, 3) in [0, 1] -> (B,) fraction of skin-coloured pixels (Kovac et al.'s RGB rule)."""
    _check_images(images)
    rgb = images * 255.0
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    accepted = (
        (red > 95)
        & (green > 40)
        & (blue > 20)
        & (spread > 15)
        & (jnp.abs(red - green) > 15)
        & (red > green)
        & (red > blue)
    )
    return accepted.mean(axis=(1, 2))


STATISTICS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "colourfulness": colourfulness,
    "brightness": brightness,
    "contrast": contrast,
    "skin": skin,
}
LEARNED = "learned"
REWARD_NAMES = (*STATISTICS, LEARNED)


# --------------------------------------------------------------------------- learned scorers


def mlp_head_apply(head: PyTree, features: jax.Array) -> jax.Array:
    """(B, F) features -> (B,) scores of an MLP head ``{"layers": [{"kernel", "bias"}, …], "activation",
    "normalize"}``: optional L2-normalization of the features, Dense layers with the activation
    ("relu" or "none") between them, the last layer of width 1."""
    hidden = features
    if head["normalize"]:
        hidden = hidden / jnp.maximum(jnp.linalg.norm(hidden, axis=-1, keepdims=True), 1e-12)
    layers = head["layers"]
    for index, layer in enumerate(layers):
        hidden = hidden @ layer["kernel"] + layer["bias"][None, :]
        if index < len(layers) - 1 and head["activation"] == "relu":
            hidden = jax.nn.relu(hidden)
    return hidden[..., 0]


def init_mlp_head(
    key: jax.Array, feature_dim: int, hidden_sizes: Sequence[int] = (64, 16), *, normalize: bool = True
) -> PyTree:
    """A random MLP head (LeCun-normal kernels, zero biases) of the ``mlp_head_apply`` format."""
    sizes = [feature_dim, *hidden_sizes, 1]
    keys = jax.random.split(key, len(sizes) - 1)
    layers = [
        {
            "kernel": np.asarray(jax.random.normal(k, (fan_in, fan_out)) / np.sqrt(fan_in), np.float32),
            "bias": np.zeros((fan_out,), np.float32),
        }
        for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:])
    ]
    return {"layers": layers, "activation": "relu", "normalize": normalize}


def save_mlp_head(path: str | os.PathLike, head: PyTree) -> None:
    """Writes an MLP head as msgpack (``flax.serialization``)."""
    state = {
        "layers": {
            str(i): {k: np.asarray(v) for k, v in layer.items()} for i, layer in enumerate(head["layers"])
        },
        "activation": head["activation"],
        "normalize": bool(head["normalize"]),
    }
    with open(path, "wb") as handle:
        handle.write(serialization.msgpack_serialize(state))


def load_mlp_head(path: str | os.PathLike) -> PyTree:
    """Reads an MLP head written by ``save_mlp_head``.

    Raises:
      ValueError: the file is missing or is not such a head (shapes checked layer to layer).
    """
    if not os.path.isfile(path):
        raise ValueError(f"No scorer head at {path}.")
    with open(path, "rb") as handle:
        try:
            state = serialization.msgpack_restore(handle.read())
        except Exception as error:  # msgpack raises several types for a foreign file
            raise ValueError(
                f"{path} is not a msgpack MLP head ({type(error).__name__}: {error})."
            ) from error
    if not isinstance(state, dict) or not {"layers", "activation", "normalize"} <= set(state):
        raise ValueError(f"{path} is not an MLP head (needs layers, activation, normalize).")
    layers = [state["layers"][str(i)] for i in range(len(state["layers"]))]
    for index, (before, after) in enumerate(itertools.pairwise(layers)):
        if before["kernel"].shape[1] != after["kernel"].shape[0]:
            raise ValueError(f"{path}: layer {index + 1} does not take layer {index}'s output.")
    if layers[-1]["kernel"].shape[1] != 1:
        raise ValueError(
            f"{path}: the last layer must output one score; it has {layers[-1]['kernel'].shape[1]}."
        )
    if state["activation"] not in ("relu", "none"):
        raise ValueError(f"{path}: unknown activation {state['activation']!r} (relu or none).")
    return {
        "layers": [{k: jnp.asarray(v) for k, v in layer.items()} for layer in layers],
        "activation": state["activation"],
        "normalize": bool(state["normalize"]),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedScorer:
    """A learned image reward: ``head(features(images))``.

    Attributes:
      features: (B, H, W, 3) images in [0, 1] -> (B, F) features, jit-able.
      head: an MLP head (``load_mlp_head``) with input width F.
    """

    features: Callable[[jax.Array], jax.Array]
    head: PyTree

    def __call__(self, images: jax.Array) -> jax.Array:
        _check_images(images)
        return mlp_head_apply(self.head, self.features(images))


CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def clip_image_features(directory: str | os.PathLike) -> Callable[[jax.Array], jax.Array]:
    """images -> (B, F) CLIP image embeddings of a local ``CLIPVisionModelWithProjection`` directory
    (images resized to its input size, normalized with CLIP's mean and std)."""
    from rs_jax.models import hf

    model, params = hf.load_flax_pretrained(directory)
    if not hasattr(model.config, "projection_dim"):
        raise ValueError(f"{directory} is not a CLIP vision model with a projection (no projection_dim).")
    size = model.config.image_size

    def features(images: jax.Array) -> jax.Array:
        resized = jax.image.resize(images, (images.shape[0], size, size, 3), "bilinear")
        normalized = (resized - CLIP_MEAN) / CLIP_STD
        pixels = jnp.transpose(normalized, (0, 3, 1, 2))
        return model(pixels, params=params).image_embeds

    return features


def reward_components(
    names: Sequence[str], scorer: LearnedScorer | None = None
) -> Callable[[jax.Array], jax.Array]:
    """images (B, H, W, 3) -> (B, R) rewards, one column per name (``REWARD_NAMES``).

    Raises:
      ValueError: an unknown name, or ``"learned"`` without a scorer.
    """
    unknown = [name for name in names if name not in REWARD_NAMES]
    if unknown or not names:
        raise ValueError(f"Unknown image reward(s) {unknown}; choose from {', '.join(REWARD_NAMES)}.")
    if LEARNED in names and scorer is None:
        raise ValueError("The 'learned' reward needs a scorer head (a file written by save_mlp_head).")
    functions = [scorer if name == LEARNED else STATISTICS[name] for name in names]

    def components(images: jax.Array) -> jax.Array:
        return jnp.stack([function(images) for function in functions], axis=-1)

    return components
