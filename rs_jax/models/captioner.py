"""Image captioning with transformers' ``FlaxVisionEncoderDecoderModel`` (ViT encoder, GPT-2 decoder).

Images are (B, H, W, 3) float32 in [0, 1]; captions are (B, L) int32 token ids,
left-aligned, ending with EOS and padded with ``pad_id`` — the format of
``rs_jax.data``. The model comes from a local HF directory (``load_captioner``)
or from a tiny config (``tiny_captioner``); its params are a plain pytree, so
soups, LoRA and the trainer apply unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Unpack

import jax
import jax.numpy as jnp

from rs_jax.models import hf, sampling

PyTree = Any


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """Sizes of a small ViT and the text model beside it (each ``num_layers`` deep, ``hidden_size``
    wide, MLP width 4 × ``hidden_size``); images are ``image_size``² pixels cut into ``patch_size``²
    patches."""

    image_size: int = 32
    patch_size: int = 8
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4


def tiny_vit_config(size: ModelSize, initializer_range: float = 0.02) -> Any:
    """A ``transformers.ViTConfig`` of a small ViT.

    Raises:
      ValueError: if ``image_size`` is not a multiple of ``patch_size``.
    """
    if size.image_size % size.patch_size:
        raise ValueError(f"image_size {size.image_size} is not a multiple of patch_size {size.patch_size}.")
    import transformers

    return transformers.ViTConfig(
        image_size=size.image_size,
        patch_size=size.patch_size,
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        intermediate_size=4 * size.hidden_size,
        initializer_range=initializer_range,
    )


def tiny_vit_gpt2_config(
    vocab_size: int,
    size: ModelSize,
    *,
    positions: int,
    special_ids: tuple[int, int, int],
    encoder_init_scale: float = 0.02,
) -> Any:
    """The ``VisionEncoderDecoderConfig`` of a small ViT + GPT-2 with ``positions`` decoder positions
    and (bos, eos, pad) ``special_ids``; ``encoder_init_scale`` is the ViT's ``initializer_range``
    (the GPT-2 keeps 0.02)."""
    import transformers

    bos_id, eos_id, pad_id = special_ids
    decoder = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=positions,
        n_embd=size.hidden_size,
        n_layer=size.num_layers,
        n_head=size.num_heads,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        add_cross_attention=True,
    )
    encoder = tiny_vit_config(size, encoder_init_scale)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = bos_id, pad_id, eos_id
    return config


def tiny_captioner(
    vocab_size: int,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_length: int = 32,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
) -> Any:
    """A small ViT + GPT-2 ``FlaxVisionEncoderDecoderModel`` (its own params are discarded: use
    ``init_params`` with an explicit key)."""
    import transformers

    size = ModelSize(image_size, patch_size, hidden_size, num_layers, num_heads)
    config = tiny_vit_gpt2_config(
        vocab_size, size, positions=max_length, special_ids=(bos_id, eos_id, pad_id)
    )
    return transformers.FlaxVisionEncoderDecoderModel(config, input_shape=_input_shape(config))


def _input_shape(config: Any) -> tuple[tuple[int, ...], tuple[int, int]]:
    size = config.encoder.image_size
    return (1, size, size, getattr(config.encoder, "num_channels", 3)), (1, 1)


def init_params(model: Any, key: jax.Array) -> PyTree:
    """Fresh params of ``model`` from ``key``."""
    return model.init_weights(key, _input_shape(model.config))


def load_captioner(directory: str | os.PathLike) -> tuple[Any, PyTree]:
    """(model, params) of a local HF VisionEncoderDecoder directory (Flax or PyTorch-format weights)."""
    model, params = hf.load_flax_pretrained(directory)
    if type(model).__name__ != "FlaxVisionEncoderDecoderModel":
        raise ValueError(f"{directory} holds a {type(model).__name__}, not a VisionEncoderDecoder model.")
    return model, params


def special_ids(model: Any) -> tuple[int, int, int]:
    """(bos, eos, pad) token ids of the decoder."""
    config = model.config
    return config.decoder_start_token_id, config.eos_token_id, config.pad_token_id


def encode_images(model: Any, params: PyTree, images: jax.Array) -> Any:
    """The vision encoder's outputs for images (B, H, W, 3) in [0, 1] (what ``model.decode`` attends to)."""
    return _encode(model, params, images)


def _encode(model: Any, params: PyTree, images: jax.Array) -> Any:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3), got {images.shape}.")
    pixel_values = jnp.transpose(2.0 * images - 1.0, (0, 3, 1, 2))  # HF vision models take NCHW
    return model.encode(pixel_values, params=params)


def _policy_logits(model: Any, logits: jax.Array) -> jax.Array:
    """Logits (..., V) with BOS and padding forbidden: the policy only emits words and EOS."""
    bos, _, pad = special_ids(model)
    return logits.at[..., bos].set(-jnp.inf).at[..., pad].set(-jnp.inf)


def token_log_probs(model: Any, params: PyTree, images: jax.Array, captions: jax.Array) -> jax.Array:
    """(B, L) log π(captionₜ | image, caption₍<t₎) by teacher forcing; 0 on padding.

    Args:
      images: (B, H, W, 3) in [0, 1].
      captions: (B, L) token ids ending with EOS, padded with pad.
    """
    bos, _, pad = special_ids(model)
    decoder_inputs = jnp.concatenate([jnp.full_like(captions[:, :1], bos), captions[:, :-1]], axis=1)
    logits = model.decode(decoder_inputs, _encode(model, params, images), params=params).logits
    logits = _policy_logits(model, logits)
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), captions[..., None], axis=-1)[..., 0]
    return jnp.where(captions != pad, log_probs, 0.0)


def caption_loss(
    model: Any, params: PyTree, images: jax.Array, captions: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean token cross-entropy (nats) of reference captions (B, L); metrics: token accuracy proxy."""
    _, _, pad = special_ids(model)
    log_probs = token_log_probs(model, params, images, captions)
    tokens = jnp.maximum((captions != pad).sum(), 1)
    loss = -log_probs.sum() / tokens
    return loss, {"cross_entropy": loss}


def start_decoding(
    model: Any, params: PyTree, images: jax.Array, max_length: int
) -> tuple[jax.tree_util.Partial, PyTree, jax.Array]:
    """What ``sampling.sample`` needs to caption images (B, H, W, 3) with ``max_length`` tokens.

    Returns:
      (step returning the (B, V) policy logits, BOS and padding at -inf, as a
      ``jax.tree_util.Partial`` over the params and the encoded images so that
      ``sampling.sample_mixture`` can vmap it; an empty KV cache of ``max_length`` slots; the
      BOS tokens (B,) to feed at step 0).
    """
    bos, _, _ = special_ids(model)
    batch = images.shape[0]
    encoded = _encode(model, params, images)
    cache = model.init_cache(batch, max_length, encoded)
    attention = jnp.ones((batch, max_length), jnp.int32)  # the cache index enforces causality
    step = jax.tree_util.Partial(functools.partial(_decode_step, model), params, encoded, attention)
    return step, cache, jnp.full((batch,), bos, jnp.int32)


def _decode_step(model: Any, params: PyTree, encoded: Any, attention: jax.Array, cache, tokens, step_index):
    positions = jnp.full((tokens.shape[0], 1), step_index, jnp.int32)
    outputs = model.decode(
        tokens[:, None],
        encoded,
        decoder_attention_mask=attention,
        decoder_position_ids=positions,
        past_key_values=cache,
        params=params,
    )
    return _policy_logits(model, outputs.logits[:, 0]), outputs.past_key_values


def sample_captions(
    model: Any,
    params: PyTree,
    images: jax.Array,
    key: jax.Array,
    *,
    max_length: int,
    **picking: Unpack[sampling.TokenPicking],
) -> sampling.Sample:
    """Captions (B, max_length) sampled (or greedy; ``picking`` as ``sampling.sample``) with the KV
    cache, inside jit, for images (B, H, W, 3) in [0, 1]."""
    step, cache, first_tokens = start_decoding(model, params, images, max_length)
    return sampling.sample(
        step, cache, first_tokens, key, max_length=max_length, **_stopping(model), **picking
    )


def sample_captions_mixture(
    model: Any,
    stacked_params: PyTree,
    weights: jax.Array,
    images: jax.Array,
    key: jax.Array,
    *,
    rule: str = "logits",
    max_length: int,
    **picking: Unpack[sampling.TokenPicking],
) -> sampling.Sample:
    """Captions (B, max_length) decoded from a mixture of N captioners (``sampling.sample_mixture``).

    ``rule="logits"``: every token from softmax(Σᵢ wᵢ log pᵢ) (MOD's decoding-time mixing);
    ``rule="probs"``: from Σᵢ wᵢ pᵢ (prediction ensembling, the oracle of Lemma 4). Both cost N
    forward passes per token (and N image encodings), unlike a soup's one.

    Args:
      stacked_params: params with a leading axis N (``soup.stack_experts``).
      weights: (N,) non-negative weights summing to 1.
      images: (B, H, W, 3) in [0, 1].
      **picking: as ``sample_captions``.
    """
    return sampling.sample_mixture(
        lambda params: start_decoding(model, params, images, max_length),
        stacked_params,
        weights,
        key,
        rule=rule,
        max_length=max_length,
        **_stopping(model),
        **picking,
    )


def _stopping(model: Any) -> sampling.Decoding:
    """The decoder's ``eos_id`` and ``pad_id`` for ``sampling.sample``."""
    _, eos, pad = special_ids(model)
    return sampling.Decoding(eos_id=eos, pad_id=pad)
