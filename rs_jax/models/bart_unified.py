"""A unified image+text → tokens model: BART encoder-decoder + Flax vision encoder (OFA / UnIVAL's shape).

The text (a referring expression, a question) goes through the BART *encoder*; the image goes
through a Flax vision encoder (``FlaxViTModel`` or ``FlaxCLIPVisionModel``), whose last hidden
states are projected by a learned Dense to BART's ``d_model`` (the Dense's bias doubles as the
image-token type embedding). The two sequences are concatenated into the encoder states the
BART decoder cross-attends to:

    encoder states  [v₀ v₁ … v_N | t₁ … t_Lp]      mask [1 … 1 | prompt ≠ <pad>]
                     └ image ┘    └ BART encoder(prompt) ┘
    decoder         [<start> o₁ … o_{L−1}] → predicts [o₁ … o_L]

transformers' ``FlaxBartForConditionalGeneration`` has no ``inputs_embeds``, hence this late
fusion (after the text encoder) rather than OFA's single encoder over patches and words; the
decoder still reads both. Outputs are 4 location tokens (grounding, ``rs_jax.models.locations``)
or the answer's words and ``<eos>`` (VQA), exactly as ``rs_jax.models.unified``. This module holds
the model-specific parts of the ``"bart"`` backbone of ``rs_jax.models.backbones``, whose
``Backbone`` adds the masks, log-probabilities, losses and sampling shared by both.

Params are one pytree ``{"bart": …, "vision": …, "projection": {"kernel", "bias"}}``, so soups,
LoRA and the trainer interpolate/train all of it. The model is a frozen ``BartUnified``
dataclass holding the two HF models (built with ``_do_init=False``: no params inside) and the
pixel normalization.

Sources: ``tiny`` (a small config, fresh params from ``init_params`` with an
explicit key) or ``load`` (a local HF BART directory and a local HF ViT/CLIP-vision
directory, Flax msgpack or PyTorch-format safetensors, via ``rs_jax.models.hf``; the projection
comes from ``image_projection.msgpack`` that ``save_bart_unified`` writes beside the BART, or is
drawn fresh from a key).

Prompts are (B, Lp) left-aligned, ``<eos>``-ended and ``<pad>``-padded (the data's format) and go
to the encoder as they are; BART needs ``max_position_embeddings >= max(Lp, L)``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax.core import unfreeze

from rs_jax.models import captioner, hf, locations, sampling

PyTree = Any
PROJECTION_FILE = "image_projection.msgpack"
VISION_CLASSES = ("FlaxViTModel", "FlaxCLIPVisionModel")
PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclasses.dataclass(frozen=True)
class BartUnified:
    """A BART + vision-encoder unified model (no params inside: pass them explicitly).

    Attributes:
      bart: a ``FlaxBartForConditionalGeneration`` (text encoder, decoder, LM head).
      vision: a ``FlaxViTModel`` or ``FlaxCLIPVisionModel``.
      pixel_mean / pixel_std: per-channel normalization of images in [0, 1] (HF ViT: 0.5 / 0.5).
    """

    bart: Any
    vision: Any
    pixel_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pixel_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def image_size(self) -> int:
        return int(self.vision.config.image_size)


def tiny(
    vocab_size: int,
    size: captioner.ModelSize,
    *,
    prompt_length: int,
    output_length: int,
    special_ids: tuple[int, int, int],
    encoder_init_scale: float = 1.0,
) -> BartUnified:
    """A small ViT + BART with positions for ``prompt_length`` prompt and ``output_length`` output
    tokens and (bos, eos, pad) ``special_ids``; no params are drawn (use ``init_params`` with an
    explicit key).

    ``size.num_layers`` is the depth of the ViT, the BART encoder and the BART decoder each;
    ``encoder_init_scale`` is the ViT's ``initializer_range`` (see ``unified.tiny``).
    ``<bos>`` is the decoder's start token.
    """
    import transformers

    bos_id, eos_id, pad_id = special_ids
    hidden_size, num_layers, num_heads = size.hidden_size, size.num_layers, size.num_heads
    bart_config = transformers.BartConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max(prompt_length, output_length),
        d_model=hidden_size,
        encoder_layers=num_layers,
        decoder_layers=num_layers,
        encoder_attention_heads=num_heads,
        decoder_attention_heads=num_heads,
        encoder_ffn_dim=4 * hidden_size,
        decoder_ffn_dim=4 * hidden_size,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        decoder_start_token_id=bos_id,
        forced_eos_token_id=None,
    )
    vision_config = captioner.tiny_vit_config(size, encoder_init_scale)
    bart = transformers.FlaxBartForConditionalGeneration(bart_config, _do_init=False)
    vision = transformers.FlaxViTModel(vision_config, _do_init=False)
    return BartUnified(bart, vision)


def _projection_shapes(model: BartUnified) -> dict[str, tuple[int, ...]]:
    width, d_model = int(model.vision.config.hidden_size), int(model.bart.config.d_model)
    return {"kernel": (width, d_model), "bias": (d_model,)}


def init_projection(model: BartUnified, key: jax.Array) -> dict[str, jax.Array]:
    """Fresh image projection: LeCun-normal (vision width, d_model) kernel, zero bias."""
    shapes = _projection_shapes(model)
    kernel = jax.nn.initializers.lecun_normal()(key, shapes["kernel"], jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros(shapes["bias"], jnp.float32)}


def init_params(
    model: BartUnified,
    key: jax.Array,
    *,
    first_location_id: int | None = None,
    num_bins: int = locations.NUM_BINS,
    location_scale: float = 0.1,
) -> PyTree:
    """Fresh params ``{"bart", "vision", "projection"}``, drawn in one jitted program, with
    ``unified.init_params``'s coordinate-aware codes: a ViT's position embeddings become Fourier
    features of the patch centres on the 1000×1000 grid, and if ``first_location_id`` is given the
    (tied input/output) BART embedding of ``<loc_b>`` becomes ``location_scale`` × the Fourier
    features of bin b's centre.

    Raises:
      ValueError: if a width is not a multiple of 4 or the location tokens do not fit.
    """
    vision_config, table_shape = model.vision.config, (vocab_size(model), int(model.bart.config.d_model))
    if first_location_id is not None and (
        first_location_id + num_bins > table_shape[0] or table_shape[1] % 4
    ):
        raise ValueError(
            f"{num_bins} location tokens from id {first_location_id} need a BART embedding table with "
            f"that many rows and a width divisible by 4; it is {table_shape}."
        )
    is_vit = type(model.vision).__name__ == "FlaxViTModel"
    if is_vit and vision_config.hidden_size % 4:
        raise ValueError(
            f"Fourier position codes need a ViT width divisible by 4, got {vision_config.hidden_size}."
        )
    image_shape = (1, model.image_size, model.image_size, getattr(vision_config, "num_channels", 3))

    def draw(key):
        bart_key, vision_key, projection_key = jax.random.split(key, 3)
        params = {
            "bart": unfreeze(model.bart.init_weights(bart_key, (1, 1))),
            "vision": unfreeze(model.vision.init_weights(vision_key, image_shape)),
            "projection": init_projection(model, projection_key),
        }
        if is_vit:
            params["vision"]["embeddings"]["position_embeddings"] = locations.patch_position_codes(
                model.image_size, int(vision_config.patch_size), int(vision_config.hidden_size)
            )
        if first_location_id is not None:
            shared = params["bart"]["model"]["shared"]
            shared["embedding"] = (
                shared["embedding"]
                .at[first_location_id : first_location_id + num_bins]
                .set(locations.location_codes(num_bins, table_shape[1], location_scale))
            )
        return params

    return jax.jit(draw)(key)


def _check_directory(name: str, directory: str | os.PathLike) -> None:
    if not directory or not hf.is_hf_directory(directory):
        raise ValueError(
            f"{name} {str(directory)!r} is not a local Hugging Face model directory (needs config.json "
            f"and {hf.FLAX_WEIGHTS} or {hf.PT_WEIGHTS[0]})."
        )


def _pixel_statistics(vision_dir: str | os.PathLike) -> dict[str, tuple[float, float, float]]:
    path = os.path.join(vision_dir, PREPROCESSOR_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        preprocessor = json.load(handle)
    statistics = {}
    for field, name in (("pixel_mean", "image_mean"), ("pixel_std", "image_std")):
        if name in preprocessor:
            values = preprocessor[name]
            statistics[field] = tuple(
                float(v) for v in (values if isinstance(values, list) else [values] * 3)
            )
    return statistics


def load(
    bart_dir: str | os.PathLike,
    vision_dir: str | os.PathLike,
    *,
    key: jax.Array | None = None,
    vocab_size: int | None = None,
) -> tuple[BartUnified, PyTree]:
    """(model, params) from a local HF BART directory and a local HF ViT / CLIP-vision directory.

    Weights are Flax (``flax_model.msgpack``) or PyTorch-format (``model.safetensors``, converted
    without torch). The projection comes from ``bart_dir/image_projection.msgpack`` when present
    (``save_bart_unified``), else it is drawn fresh from ``key``. Image normalization comes from
    ``vision_dir/preprocessor_config.json`` (``image_mean``/``image_std``) when present.

    Args:
      key: PRNG key of a fresh projection (needed only without ``image_projection.msgpack``).
      vocab_size: if given, the BART's vocabulary must have exactly this many tokens.

    Raises:
      ValueError: on a missing directory, the wrong model classes, a vocabulary or projection of
        the wrong size, or no projection and no key.
    """
    _check_directory("bart_dir", bart_dir)
    _check_directory("vision_dir", vision_dir)
    bart, bart_params = hf.load_flax_pretrained(bart_dir)
    if type(bart).__name__ != "FlaxBartForConditionalGeneration":
        raise ValueError(f"{bart_dir} holds a {type(bart).__name__}, not a BartForConditionalGeneration.")
    vision, vision_params = hf.load_flax_pretrained(vision_dir)
    if type(vision).__name__ not in VISION_CLASSES:
        raise ValueError(
            f"{vision_dir} holds a {type(vision).__name__}; a vision encoder must be one of "
            f"{', '.join(name[4:] for name in VISION_CLASSES)} (save the base model, not a head)."
        )
    model = BartUnified(bart, vision, **_pixel_statistics(vision_dir))
    tokens = int(bart.config.vocab_size)
    if vocab_size is not None and tokens != vocab_size:
        raise ValueError(f"{bart_dir} has a vocabulary of {tokens} tokens; this data needs {vocab_size}.")
    path = os.path.join(bart_dir, PROJECTION_FILE)
    if os.path.exists(path):
        with open(path, "rb") as handle:
            projection = {
                name: jnp.asarray(value)
                for name, value in serialization.msgpack_restore(handle.read()).items()
            }
        expected = _projection_shapes(model)
        found = {name: tuple(np.shape(value)) for name, value in projection.items()}
        if found != expected:
            raise ValueError(f"{path} holds shapes {found}; this BART and vision encoder need {expected}.")
    elif key is None:
        raise ValueError(
            f"{bart_dir} has no {PROJECTION_FILE} (written by save_bart_unified): pass a key to draw a "
            "fresh image projection."
        )
    else:
        projection = jax.jit(init_projection, static_argnums=0)(model, key)
    params = {"bart": unfreeze(bart_params), "vision": unfreeze(vision_params), "projection": projection}
    return model, params


def save_bart_unified(
    model: BartUnified, params: PyTree, bart_dir: str | os.PathLike, vision_dir: str | os.PathLike
) -> None:
    """Writes the BART and the vision encoder as HF Flax directories (``load`` reads
    them back), the projection into ``bart_dir/image_projection.msgpack`` and the pixel
    normalization into ``vision_dir/preprocessor_config.json``."""
    hf.save_flax_pretrained(model.bart, params["bart"], bart_dir)
    hf.save_flax_pretrained(model.vision, params["vision"], vision_dir)
    projection = {name: np.asarray(value) for name, value in params["projection"].items()}
    with open(os.path.join(bart_dir, PROJECTION_FILE), "wb") as handle:
        handle.write(serialization.msgpack_serialize(projection))
    with open(os.path.join(vision_dir, PREPROCESSOR_FILE), "w") as handle:
        json.dump({"image_mean": list(model.pixel_mean), "image_std": list(model.pixel_std)}, handle)


def vocab_size(model: BartUnified) -> int:
    """Number of token ids of the BART."""
    return int(model.bart.config.vocab_size)


def special_ids(model: BartUnified) -> tuple[int, int, int]:
    """(decoder start, eos, pad) token ids of the BART (``captioner.special_ids``' order)."""
    config = model.bart.config
    return int(config.decoder_start_token_id), int(config.eos_token_id), int(config.pad_token_id)


def default_allowed(model: BartUnified) -> np.ndarray:
    """(V,) bool: every token but the decoder start, ``<bos>`` and ``<pad>`` (``<eos>`` always allowed,
    even where a pre-trained BART starts its decoder with it)."""
    start, eos, pad = special_ids(model)
    allowed = np.ones((vocab_size(model),), bool)
    bos = model.bart.config.bos_token_id
    allowed[[token for token in (start, pad, bos) if token is not None and token != eos]] = False
    return allowed


def _check_lengths(model: BartUnified, prompt_length: int, output_length: int) -> None:
    positions = int(model.bart.config.max_position_embeddings)
    if max(prompt_length, output_length) > positions:
        raise ValueError(
            f"The BART has {positions} positions; prompts of {prompt_length} and outputs of "
            f"{output_length} tokens need {max(prompt_length, output_length)}."
        )


def encode(
    model: BartUnified, params: PyTree, images: jax.Array, prompts: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The encoder states the decoder attends to: projected image tokens, then the encoded prompt.

    Args:
      images: (B, H, W, 3) in [0, 1], H = W = the vision encoder's image size.
      prompts: (B, Lp) left-aligned prompt ids, ``<pad>``-padded.

    Returns:
      (B, N + Lp, d_model) float32 states (N image tokens, the class token included) and their
      (B, N + Lp) int32 attention mask (image tokens always, prompt tokens where not ``<pad>``).
    """
    size = model.image_size
    if jnp.ndim(images) != 4 or tuple(images.shape[1:]) != (size, size, 3):
        raise ValueError(f"images must be (B, {size}, {size}, 3) in [0, 1]; got shape {jnp.shape(images)}.")
    if jnp.ndim(prompts) != 2 or not jnp.issubdtype(jnp.result_type(prompts), jnp.integer):
        raise ValueError(
            f"prompts must be (B, Lp) integer token ids; got shape {jnp.shape(prompts)} and dtype "
            f"{jnp.result_type(prompts)}."
        )
    if prompts.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {prompts.shape[0]} prompts.")
    mean = jnp.asarray(model.pixel_mean, jnp.float32)[None, None, None, :]
    std = jnp.asarray(model.pixel_std, jnp.float32)[None, None, None, :]
    pixels = jnp.transpose((images - mean) / std, (0, 3, 1, 2))  # HF vision models take NCHW
    features = model.vision(pixels, params=params["vision"]).last_hidden_state
    projection = params["projection"]
    image_states = features @ projection["kernel"] + projection["bias"][None, None, :]
    _, _, pad = special_ids(model)
    text_mask = (prompts != pad).astype(jnp.int32)
    text_states = model.bart.encode(prompts, text_mask, params=params["bart"]).last_hidden_state
    mask = jnp.concatenate([jnp.ones(image_states.shape[:2], jnp.int32), text_mask], axis=1)
    return jnp.concatenate([image_states, text_states], axis=1), mask


def output_logits(
    model: BartUnified, params: PyTree, images: jax.Array, prompts: jax.Array, outputs: jax.Array
) -> jax.Array:
    """(B, L, V) logits of output t given the image, the prompt and outputs₍<t₎, by teacher forcing;
    images (B, H, W, 3), prompts (B, Lp) and outputs (B, L) as ``unified.output_logits`` takes them."""
    _check_lengths(model, prompts.shape[1], outputs.shape[1])
    start, _, _ = special_ids(model)
    states, mask = encode(model, params, images, prompts)
    outputs = outputs.astype(jnp.int32)
    inputs = jnp.concatenate([jnp.full_like(outputs[:, :1], start), outputs[:, :-1]], axis=1)
    return model.bart.decode(inputs, (states,), encoder_attention_mask=mask, params=params["bart"]).logits


def start_decoding(
    model: BartUnified, params: PyTree, images: jax.Array, prompts: jax.Array, max_length: int
) -> tuple[sampling.StepFn, PyTree, jax.Array]:
    """What ``sampling.sample`` needs to decode ``max_length`` outputs for each image (B, H, W, 3) and
    prompt (B, Lp), as ``unified.start_decoding``: the step (a ``jax.tree_util.Partial`` over the params
    and encoder states), an empty KV cache of ``max_length`` slots and the decoder start tokens (B,)."""
    _check_lengths(model, prompts.shape[1], max_length)
    start, _, _ = special_ids(model)
    states, mask = encode(model, params, images, prompts)
    batch = states.shape[0]
    cache = model.bart.init_cache(batch, max_length, (states,))
    attention = jnp.ones((batch, max_length), jnp.int32)  # the cache index enforces causality
    step = jax.tree_util.Partial(
        functools.partial(_decode_step, model), params["bart"], states, mask, attention
    )
    return step, cache, jnp.full((batch,), start, jnp.int32)


def _decode_step(model, bart_params, states, mask, attention, cache, tokens, step_index):
    outputs = model.bart.decode(
        tokens[:, None],
        (states,),
        encoder_attention_mask=mask,
        decoder_attention_mask=attention,
        decoder_position_ids=jnp.full((tokens.shape[0], 1), step_index, jnp.int32),
        past_key_values=cache,
        params=bart_params,
    )
    return outputs.logits[:, 0], outputs.past_key_values
