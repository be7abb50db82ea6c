"""A unified image+text → tokens model for visual grounding and VQA (the role of OFA / UnIVAL).

The model is the captioner's ``FlaxVisionEncoderDecoderModel`` (ViT encoder, GPT-2 decoder
with cross-attention, ``rs_jax.models.captioner``): the image goes through the encoder and
the text (a referring expression, a question) is the decoder's *prompt*; the model then
continues with its output tokens — 4 location tokens ``<loc_x0> <loc_y0> <loc_x1> <loc_y1>``
for grounding (``rs_jax.models.locations``), the answer's words and ``<eos>`` for VQA. A
vocabulary of words and location tokens (``rs_jax.data.vocab.with_location_tokens``) lets one
model do both; the VQA task uses the words only.

Sequence layout. Prompts come as the data gives them, (B, Lp) left-aligned, ``<eos>``-ended
and ``<pad>``-padded. The decoder reads the *context* ``<bos> prompt <eos>`` right-aligned in
C = Lp + 1 slots (left padding, masked out of attention; position ids count real tokens
only), followed by the outputs:

    [<pad> … <pad> <bos> w₁ … wₖ <eos>] [o₁ … o_L]
     └──────── context, C ─────────┘  └ outputs ┘

so every row's last context token sits at index C − 1 and output t at index C + t. Decoding
(``start_decoding``) prefills the context but its last token into a KV cache of C + L − 1 slots
and lets ``rs_jax.models.sampling.sample`` feed that last token at step 0; teacher forcing
(``output_logits``) runs the same sequence in one pass, so sampled log-probabilities equal
teacher-forced ones.

The GPT-2 needs ``n_positions >= Lp + L`` (``tiny`` sets it).

This module holds the model-specific parts of the ``"vit-gpt2"`` backbone of
``rs_jax.models.backbones``, whose ``Backbone`` adds the masks, log-probabilities, losses and
sampling shared with ``rs_jax.models.bart_unified`` (OFA/UnIVAL's family: image patches and text
in a BART *encoder*). A local HF ``VisionEncoderDecoder`` directory (``captioner.load_captioner``)
whose decoder vocabulary is the task's is this backbone's pre-trained path.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze

from rs_jax.models import captioner, locations, sampling

if TYPE_CHECKING:
    from transformers import FlaxVisionEncoderDecoderModel

PyTree = Any

# (decoder start, <eos>, <pad>) ids: the captioner's, whose GPT-2 decoder this model shares.
special_ids = captioner.special_ids


def tiny(
    vocab_size: int,
    size: captioner.ModelSize,
    *,
    prompt_length: int,
    output_length: int,
    special_ids: tuple[int, int, int],
    encoder_init_scale: float = 1.0,
) -> FlaxVisionEncoderDecoderModel:
    """A small ViT + GPT-2 ``FlaxVisionEncoderDecoderModel`` with positions for ``prompt_length``
    prompt and ``output_length`` output tokens and (bos, eos, pad) ``special_ids`` (its own params
    are discarded: use ``init_params`` with an explicit key).

    Args:
      encoder_init_scale: the ViT's ``initializer_range``. HF ViT draws its kernels with std
        ``initializer_range / √fan_in`` (0.02 by default); from scratch, such a tiny ViT takes
        hundreds of updates longer to learn *where* things are (measured on the scene world), so
        the default 1.0 is LeCun-normal. The GPT-2 keeps its usual 0.02.
    """
    import transformers

    config = captioner.tiny_vit_gpt2_config(
        vocab_size,
        size,
        positions=prompt_length + output_length,
        special_ids=special_ids,
        encoder_init_scale=encoder_init_scale,
    )
    # Built without HF's eager random initialization (the class refuses ``_do_init=False``): run op
    # by op, it compiles every op once, ~20 s of CPU; ``init_params`` draws the weights in one
    # jitted program instead. Such a model has no ``model.params``: pass params explicitly.
    model_class = transformers.FlaxVisionEncoderDecoderModel
    model = model_class.__new__(model_class)
    transformers.FlaxPreTrainedModel.__init__(
        model,
        config,
        model_class.module_class(config=config),
        input_shape=((1, size.image_size, size.image_size, 3), (1, 1)),
        _do_init=False,
    )
    return model


def init_params(
    model: FlaxVisionEncoderDecoderModel,
    key: jax.Array,
    *,
    first_location_id: int | None = None,
    num_bins: int = locations.NUM_BINS,
    location_scale: float = 0.1,
) -> PyTree:
    """Fresh params of a tiny unified model with coordinate-aware position codes.

    ``captioner.init_params`` (as one jitted program), then (i) the ViT's position embeddings
    become Fourier features of each patch centre on the 1000×1000 grid (x in the first half of
    the channels, y in the second; zeros for the class token), and (ii) if ``first_location_id`` is given, the
    embedding of location token ``<loc_b>`` becomes ``location_scale`` × the Fourier features
    of bin b's centre (in both halves). Neighbouring bins then start with similar embeddings
    (the GPT-2 ties its output layer to them, so near misses start with similar scores) in the
    same code as the patches' positions; measured on the scene world, a tiny model trained from
    scratch localizes single objects much sooner (IoU > 0.5 on [0.51, 0.93, 0.98] of small,
    medium, large objects after 1500 updates, against [0.19, 0.52, 0.65] with random
    embeddings).

    Raises:
      ValueError: if the hidden size is not a multiple of 4 or the location tokens do not fit.
    """
    encoder = model.config.encoder
    shapes = ((1, encoder.image_size, encoder.image_size, getattr(encoder, "num_channels", 3)), (1, 1))
    params = unfreeze(jax.jit(model.init_weights, static_argnums=1)(key, shapes))
    hidden = int(encoder.hidden_size)
    if hidden % 4:
        raise ValueError(f"Fourier position codes need a hidden size divisible by 4, got {hidden}.")
    embeddings = params["encoder"]["embeddings"]
    embeddings["position_embeddings"] = locations.patch_position_codes(
        encoder.image_size, encoder.patch_size, hidden
    )
    if first_location_id is not None:
        table = params["decoder"]["transformer"]["wte"]["embedding"]
        if first_location_id + num_bins > table.shape[0] or table.shape[1] != hidden:
            raise ValueError(
                f"{num_bins} location tokens from id {first_location_id} do not fit the decoder's "
                f"embeddings {table.shape} (the decoder's width must equal the encoder's, {hidden})."
            )
        params["decoder"]["transformer"]["wte"]["embedding"] = table.at[
            first_location_id : first_location_id + num_bins
        ].set(locations.location_codes(num_bins, hidden, location_scale))
    return params


def vocab_size(model: FlaxVisionEncoderDecoderModel) -> int:
    """Number of token ids of the decoder."""
    return int(model.config.decoder.vocab_size)


def _check_lengths(model: FlaxVisionEncoderDecoderModel, prompt_length: int, output_length: int) -> None:
    positions = int(model.config.decoder.max_position_embeddings)
    if prompt_length + output_length > positions:
        raise ValueError(
            f"The decoder has {positions} positions; prompts of {prompt_length} and outputs of "
            f"{output_length} tokens need {prompt_length + output_length}."
        )


def _check_prompts(prompts: jax.Array) -> None:
    if jnp.ndim(prompts) != 2 or not jnp.issubdtype(jnp.result_type(prompts), jnp.integer):
        raise ValueError(
            f"prompts must be (B, Lp) integer token ids; got shape {jnp.shape(prompts)} and dtype "
            f"{jnp.result_type(prompts)}."
        )


def prompt_context(prompts: jax.Array, bos_id: int, pad_id: int) -> tuple[jax.Array, jax.Array]:
    """``<bos>`` + prompt, right-aligned (left-padded).

    Args:
      prompts: (B, Lp) left-aligned token ids, padding only after the text.
      bos_id / pad_id: special ids.

    Returns:
      (B, Lp + 1) int32 context and (B, Lp + 1) bool mask of its real tokens.
    """
    _check_prompts(prompts)
    prompts = jnp.asarray(prompts, jnp.int32)
    context = jnp.concatenate([jnp.full_like(prompts[:, :1], bos_id), prompts], axis=1)
    width = context.shape[1]
    length = (context != pad_id).sum(axis=1)
    source = jnp.arange(width)[None, :] - (width - length)[:, None]
    aligned = jnp.take_along_axis(context, jnp.maximum(source, 0), axis=1)
    present = source >= 0
    return jnp.where(present, aligned, pad_id), present


def default_allowed(model: FlaxVisionEncoderDecoderModel) -> np.ndarray:
    """(V,) bool: every token but ``<bos>`` and ``<pad>`` (the captioner's policy)."""
    bos, _, pad = captioner.special_ids(model)
    allowed = np.ones((vocab_size(model),), bool)
    allowed[[bos, pad]] = False
    return allowed


def output_logits(
    model: FlaxVisionEncoderDecoderModel,
    params: PyTree,
    images: jax.Array,
    prompts: jax.Array,
    outputs: jax.Array,
) -> jax.Array:
    """(B, L, V) logits of output t given the image, the prompt and outputs₍<t₎, by teacher forcing.

    Args:
      images: (B, H, W, 3) in [0, 1].
      prompts: (B, Lp) left-aligned prompt ids.
      outputs: (B, L) output ids (right after the prompt).
    """
    _check_lengths(model, prompts.shape[1], outputs.shape[1])
    bos, _, pad = captioner.special_ids(model)
    context, present = prompt_context(prompts, bos, pad)
    sequence = jnp.concatenate([context, outputs.astype(jnp.int32)], axis=1)
    mask = jnp.concatenate([present, jnp.ones(outputs.shape, bool)], axis=1)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    logits = model.decode(
        sequence[:, :-1],
        captioner.encode_images(model, params, images),
        decoder_attention_mask=mask[:, :-1].astype(jnp.int32),
        decoder_position_ids=positions[:, :-1],
        params=params,
    ).logits
    return logits[:, context.shape[1] - 1 :]


def start_decoding(
    model: FlaxVisionEncoderDecoderModel,
    params: PyTree,
    images: jax.Array,
    prompts: jax.Array,
    max_length: int,
) -> tuple[sampling.StepFn, PyTree, jax.Array]:
    """What ``sampling.sample`` needs to decode ``max_length`` outputs after each prompt.

    Args:
      images: (B, H, W, 3) in [0, 1].
      prompts: (B, Lp) left-aligned prompt ids.

    Returns:
      (step returning the (B, V) logits of the next output, a ``jax.tree_util.Partial`` over the
      params and encoded image (vmappable by ``sampling.sample_mixture``), the KV cache with the
      context but its last token prefilled, that last token (B,) to feed at step 0).
    """
    _check_lengths(model, prompts.shape[1], max_length)
    bos, _, pad = captioner.special_ids(model)
    context, present = prompt_context(prompts, bos, pad)
    batch, width = context.shape
    encoded = captioner.encode_images(model, params, images)
    cache = model.init_cache(batch, width + max_length - 1, encoded)
    attention = jnp.concatenate([present, jnp.ones((batch, max_length - 1), bool)], axis=1).astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(present, axis=1) - 1, 0)
    if width > 1:
        cache = model.decode(
            context[:, :-1],
            encoded,
            decoder_attention_mask=attention,
            decoder_position_ids=positions[:, :-1],
            past_key_values=cache,
            params=params,
        ).past_key_values
    step = jax.tree_util.Partial(
        functools.partial(_decode_step, model), params, encoded, attention, positions[:, -1]
    )
    return step, cache, context[:, -1]


def _decode_step(model, params, encoded, attention, last_position, cache, tokens, step_index):
    outputs = model.decode(
        tokens[:, None],
        encoded,
        decoder_attention_mask=attention,
        decoder_position_ids=(last_position + step_index)[:, None],
        past_key_values=cache,
        params=params,
    )
    return outputs.logits[:, 0], outputs.past_key_values


def load(
    model_dir: str | os.PathLike, vision_dir: str | os.PathLike, *, key: jax.Array | None = None
) -> tuple[FlaxVisionEncoderDecoderModel, PyTree]:
    """(model, params) of a local HF VisionEncoderDecoder directory (``captioner.load_captioner``);
    the ViT is part of it, so ``vision_dir`` and ``key`` are unused."""
    del vision_dir, key
    return captioner.load_captioner(model_dir)
