"""A unified image+text → tokens model for visual grounding and VQA (the role of OFA / UnIVAL).

The model is the captioner's ``FlaxVisionEncoderDecoderModel`` (ViT encoder, GPT-2 decoder
with cross-attention, ``rs_jax.models.captioner``): the image goes through the encoder and
the text (a referring expression, a question) is the decoder's *prompt*; the model then
continues with its output tokens — 4 location tokens ``<loc_x0> <loc_y0> <loc_x1> <loc_y1>``
for grounding (``rs_jax.rewards.boxes``), the answer's words and ``<eos>`` for VQA. A
vocabulary of words and location tokens (``boxes.with_location_tokens``) lets one model
do both; the VQA task uses the words only.

Sequence layout. Prompts come as the data gives them, (B, Lp) left-aligned, ``<eos>``-ended
and ``<pad>``-padded. The decoder reads the *context* ``<bos> prompt <eos>`` right-aligned in
C = Lp + 1 slots (left padding, masked out of attention; position ids count real tokens
only), followed by the outputs:

    [<pad> … <pad> <bos> w₁ … wₖ <eos>] [o₁ … o_L]
     └──────── context, C ─────────┘  └ outputs ┘

so every row's last context token sits at index C − 1 and output t at index C + t. Sampling
prefills the context but its last token into a KV cache of C + L − 1 slots and lets
``rs_jax.models.sampling.sample`` feed that last token at step 0; teacher forcing runs the
same sequence in one pass. Both apply the same ``allowed`` token mask (grounding: location
tokens only; VQA: words and ``<eos>``), so sampled log-probabilities equal teacher-forced ones.

The GPT-2 needs ``n_positions >= Lp + L`` (``tiny_unified_model`` sets it).

Other backbones. OFA/UnIVAL feed image patches and text together into a BART *encoder*;
``rs_jax.models.bart_unified`` is that family (a local HF BART + ViT/CLIP-vision pair, or a tiny
config) with the same functions as this module, so a task switches backbone by switching module
(``--set backbone=bart``). A local HF ``VisionEncoderDecoder`` directory
(``captioner.load_captioner``) whose decoder vocabulary is the task's is this module's
pre-trained path.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze

from rs_jax.models import captioner, sampling
from rs_jax.rewards import boxes

PyTree = Any


def tiny_unified_model(
    vocab_size: int,
    *,
    prompt_length: int,
    output_length: int,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    encoder_init_scale: float = 1.0,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
) -> Any:
    """A small ViT + GPT-2 ``FlaxVisionEncoderDecoderModel`` with positions for ``prompt_length``
    prompt and ``output_length`` output tokens (its own params are discarded: use
    ``captioner.init_params`` with an explicit key).

    Args:
      encoder_init_scale: the ViT's ``initializer_range``. HF ViT draws its kernels with std
        ``initializer_range / √fan_in`` (0.02 by default); from scratch, such a tiny ViT takes
        hundreds of updates longer to learn *where* things are (measured on the scene world), so
        the default 1.0 is LeCun-normal. The GPT-2 keeps its usual 0.02.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}.")
    import transformers

    encoder = transformers.ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        initializer_range=encoder_init_scale,
    )
    decoder = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=prompt_length + output_length,
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=num_heads,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        add_cross_attention=True,
    )
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = bos_id, pad_id, eos_id
    # Built without HF's eager random initialization (the class refuses ``_do_init=False``): run op
    # by op, it compiles every op once, ~20 s of CPU; ``init_params`` draws the weights in one
    # jitted program instead. Such a model has no ``model.params``: pass params explicitly.
    model_class = transformers.FlaxVisionEncoderDecoderModel
    model = model_class.__new__(model_class)
    transformers.FlaxPreTrainedModel.__init__(
        model,
        config,
        model_class.module_class(config=config),
        input_shape=((1, image_size, image_size, 3), (1, 1)),
        _do_init=False,
    )
    return model


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
    angles = 2.0 * jnp.pi * coordinates[..., None] / boxes.GRID * cycles
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def patch_position_codes(image_size: int, patch_size: int, width: int) -> jax.Array:
    """(1, 1 + P, width) ViT position embeddings: zeros for the class token, then each patch
    centre's Fourier features on the 1000×1000 grid (x in the first half of the channels, y in
    the second); ``width`` must be a multiple of 4."""
    side = image_size // patch_size
    centres = (jnp.arange(side, dtype=jnp.float32) + 0.5) * (boxes.GRID / side)
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


def init_params(
    model: Any,
    key: jax.Array,
    *,
    first_location_id: int | None = None,
    num_bins: int = boxes.NUM_BINS,
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
    embeddings["position_embeddings"] = patch_position_codes(encoder.image_size, encoder.patch_size, hidden)
    if first_location_id is not None:
        table = params["decoder"]["transformer"]["wte"]["embedding"]
        if first_location_id + num_bins > table.shape[0] or table.shape[1] != hidden:
            raise ValueError(
                f"{num_bins} location tokens from id {first_location_id} do not fit the decoder's "
                f"embeddings {table.shape} (the decoder's width must equal the encoder's, {hidden})."
            )
        params["decoder"]["transformer"]["wte"]["embedding"] = table.at[
            first_location_id : first_location_id + num_bins
        ].set(location_codes(num_bins, hidden, location_scale))
    return params


def vocab_size(model: Any) -> int:
    """Number of token ids of the decoder."""
    return int(model.config.decoder.vocab_size)


def _check_lengths(model: Any, prompt_length: int, output_length: int) -> None:
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


def default_allowed(model: Any) -> np.ndarray:
    """(V,) bool: every token but ``<bos>`` and ``<pad>`` (the captioner's policy)."""
    bos, _, pad = captioner.special_ids(model)
    allowed = np.ones((vocab_size(model),), bool)
    allowed[[bos, pad]] = False
    return allowed


def without_locations(allowed: np.ndarray, first_location_id: int | None) -> np.ndarray:
    """A (V,) bool token mask with the location tokens (ids from ``first_location_id`` on) removed."""
    allowed = allowed.copy()
    if first_location_id is not None:
        allowed[first_location_id:] = False
    return allowed


def word_mask(model: Any, first_location_id: int | None) -> np.ndarray:
    """(V,) bool: words and ``<eos>``, no ``<bos>``/``<pad>`` and no location tokens (VQA answers)."""
    return without_locations(default_allowed(model), first_location_id)


def mask_logits(logits: jax.Array, allowed: Any) -> jax.Array:
    """(..., V) logits with -inf wherever the (V,) bool mask ``allowed`` is False."""
    if np.shape(allowed) != (logits.shape[-1],):
        raise ValueError(f"allowed must be a ({logits.shape[-1]},) bool mask; got shape {np.shape(allowed)}.")
    return jnp.where(jnp.asarray(allowed), logits, -jnp.inf)


def _mask_logits(model: Any, logits: jax.Array, allowed: Any) -> jax.Array:
    return mask_logits(logits, default_allowed(model) if allowed is None else allowed)


def output_log_probs(
    model: Any,
    params: PyTree,
    images: jax.Array,
    prompts: jax.Array,
    outputs: jax.Array,
    allowed: Any = None,
) -> jax.Array:
    """(B, L, V) log π(· | image, prompt, outputs₍<t₎) at every output step, by teacher forcing.

    Args:
      images: (B, H, W, 3) in [0, 1].
      prompts: (B, Lp) left-aligned prompt ids.
      outputs: (B, L) output ids (right after the prompt).
      allowed: (V,) bool mask of the tokens the policy may emit (-inf elsewhere); None: all but
        ``<bos>`` and ``<pad>``.
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
    logits = logits[:, context.shape[1] - 1 :]
    return jax.nn.log_softmax(_mask_logits(model, logits, allowed), axis=-1)


def chosen_log_probs(log_probs: jax.Array, outputs: jax.Array, pad_id: int) -> jax.Array:
    """(B, L, V) log-probs and (B, L) outputs -> (B, L) log-probs of the outputs, 0 at ``pad_id``."""
    chosen = jnp.take_along_axis(log_probs, outputs[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.where(outputs != pad_id, chosen, 0.0)


def mean_token_cross_entropy(
    token_log_probs: jax.Array, targets: jax.Array, pad_id: int
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy (nats) per non-pad target token from (B, L) log-probs of the targets."""
    loss = -token_log_probs.sum() / jnp.maximum((targets != pad_id).sum(), 1)
    return loss, {"cross_entropy": loss}


def location_loss(
    log_probs: jax.Array, target_tokens: jax.Array, first_location_id: int, num_bins: int, sigma: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy of (B, 4) true location tokens from (B, 4, V) log-probs restricted to them.

    ``sigma`` > 0 spreads each target over neighbouring bins (``boxes.gaussian_bin_targets``).

    Returns:
      (mean cross-entropy per coordinate, metrics with it and the plain one-hot cross-entropy).
    """
    location_log_probs = log_probs[..., first_location_id : first_location_id + num_bins]
    bins = target_tokens - first_location_id
    targets = boxes.gaussian_bin_targets(bins, num_bins, sigma)
    loss = -(targets * location_log_probs).sum(axis=-1).mean()
    exact = -jnp.take_along_axis(location_log_probs, bins[..., None], axis=-1).mean()
    return loss, {"cross_entropy": loss, "true_token_cross_entropy": exact}


def token_log_probs(
    model: Any,
    params: PyTree,
    images: jax.Array,
    prompts: jax.Array,
    outputs: jax.Array,
    allowed: Any = None,
) -> jax.Array:
    """(B, L) log π(outputₜ | image, prompt, outputs₍<t₎); 0 at padding (see ``output_log_probs``)."""
    _, _, pad = captioner.special_ids(model)
    return chosen_log_probs(output_log_probs(model, params, images, prompts, outputs, allowed), outputs, pad)


def sequence_cross_entropy(
    model: Any,
    params: PyTree,
    images: jax.Array,
    prompts: jax.Array,
    targets: jax.Array,
    allowed: Any = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean token cross-entropy (nats) of target outputs (B, L) given image and prompt (pads skipped)."""
    _, _, pad = captioner.special_ids(model)
    return mean_token_cross_entropy(
        token_log_probs(model, params, images, prompts, targets, allowed), targets, pad
    )


def location_cross_entropy(
    model: Any,
    params: PyTree,
    images: jax.Array,
    prompts: jax.Array,
    target_tokens: jax.Array,
    *,
    first_location_id: int,
    num_bins: int,
    sigma: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy of the 4 location tokens of the true boxes, the policy restricted to location tokens.

    Args:
      target_tokens: (B, 4) true location token ids.
      sigma: > 0 spreads each target over neighbouring bins (``boxes.gaussian_bin_targets``); 0 is
        the plain cross-entropy on the true tokens.

    Returns:
      (mean cross-entropy per coordinate, metrics with it and the plain one-hot cross-entropy).
    """
    allowed = boxes.location_mask(vocab_size(model), first_location_id, num_bins)
    log_probs = output_log_probs(model, params, images, prompts, target_tokens, allowed)
    return location_loss(log_probs, target_tokens, first_location_id, num_bins, sigma)


def sample_outputs(
    model: Any,
    params: PyTree,
    images: jax.Array,
    prompts: jax.Array,
    key: jax.Array,
    *,
    max_length: int,
    allowed: Any = None,
    stop_at_eos: bool = True,
    greedy: bool = False,
    temperature: float = 1.0,
) -> sampling.Sample:
    """Outputs (B, max_length) sampled (or greedy) after each prompt, with the KV cache, inside jit.

    Args:
      images: (B, H, W, 3) in [0, 1].
      prompts: (B, Lp) left-aligned prompt ids.
      key: PRNG key.
      max_length: L output tokens.
      allowed: (V,) bool mask of the tokens the policy may emit; None: all but ``<bos>``/``<pad>``.
      stop_at_eos: rows emit ``<pad>`` after their ``<eos>`` (False for fixed-length outputs such
        as the 4 location tokens).
      greedy / temperature: as ``sampling.sample``.

    Returns:
      A ``sampling.Sample`` whose log-probs equal ``token_log_probs`` of its tokens.
    """
    _check_lengths(model, prompts.shape[1], max_length)
    bos, eos, pad = captioner.special_ids(model)
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
    last_position = positions[:, -1]

    def step(cache, tokens, step_index):
        outputs = model.decode(
            tokens[:, None],
            encoded,
            decoder_attention_mask=attention,
            decoder_position_ids=(last_position + step_index)[:, None],
            past_key_values=cache,
            params=params,
        )
        return _mask_logits(model, outputs.logits[:, 0], allowed), outputs.past_key_values

    return sampling.sample(
        step,
        cache,
        context[:, -1],
        key,
        max_length=max_length,
        eos_id=eos if stop_at_eos else None,
        pad_id=pad,
        greedy=greedy,
        temperature=temperature,
    )
