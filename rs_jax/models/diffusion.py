"""Text-to-image diffusion with diffusers' Flax classes: a tiny pixel-space model or a local Stable Diffusion.

A ``DiffusionModel`` bundles a ``FlaxUNet2DConditionModel`` (ε-prediction), a CLIP text encoder
(``FlaxCLIPTextModel``), an optional ``FlaxAutoencoderKL`` and the diffusers Flax schedulers:
``FlaxDDPMScheduler`` adds noise for training, ``FlaxDDIMScheduler`` samples. Its params are one
pytree ``{"unet": …, "text_encoder": …[, "vae": …]}``, so experts, soups and the trainer see a
plain pytree; ``trainable_mask`` picks the part fine-tuning may change (paper Appendix E: the
cross-attention layers and every bias/scale of the UNet, ~10% of the weights).

* ``tiny_diffusion_model``: a pixel-space model for the scene world. Images (B, H, W, 3) in [0, 1]
  become UNet samples by x = 2·image − 1 and a ``patch_size``² space-to-depth (a fixed,
  invertible "autoencoder": a 32×32×3 image is a 16×16×12 sample with ``patch_size`` 2, which
  makes the UNet 4× cheaper on CPU). Prompts are scene-vocabulary token ids.
* ``load_stable_diffusion``: ``unet/``, ``text_encoder/``, ``vae/``, ``scheduler/`` and
  ``tokenizer/`` of a local Stable Diffusion directory (diffusers layout; Flax msgpack weights, or
  PyTorch ``.bin`` weights converted with ``from_pt``). Prompts are token ids of the caller's
  vocabulary, decoded to text by the function the caller gives and tokenized with the CLIP
  tokenizer on the host.

Sampling (``sample``) is deterministic DDIM (η = 0) inside jit, a ``lax.scan`` over the timesteps,
from initial noise the caller gives: draw it from one fixed key per prompt (``initial_noise``) and
every model sees the same noise for the same prompt, so differences come from the weights only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from rs_jax.models import hf

PyTree = Any
# Compile options for one-off initialization programs: XLA's optimizations cost more than they save.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
TRAIN, FREEZE = "train", "freeze"


def _quiet_diffusers() -> None:
    """diffusers 0.39 logs a deprecation warning for every Flax module ``setup``; once is enough."""
    logging.getLogger("diffusers").setLevel(logging.ERROR)


@dataclasses.dataclass(frozen=True, eq=False)
class DiffusionModel:
    """A text-to-image denoiser and everything around it (no params: they travel separately).

    Attributes:
      unet: ``FlaxUNet2DConditionModel``; input/output (B, C, h, w) NCHW samples.
      text_encoder: ``FlaxCLIPTextModel``; its ``last_hidden_state`` (B, L, D) conditions the UNet.
      noise_scheduler / noise_state: ``FlaxDDPMScheduler`` and its state (training noise).
      sampler / sampler_state: ``FlaxDDIMScheduler`` and its state (timesteps set per call).
      image_size: H = W of the images, pixels.
      sample_shape: (C, h, w) of a UNet sample.
      prompt_length: L tokens of an encoded prompt.
      null_tokens / null_mask: (L,) the empty prompt (for classifier-free guidance).
      tokenize: host function, scene token ids (B, Ls) -> (ids (B, L), mask (B, L)) of the text encoder.
      patch_size: pixel-space models: the space-to-depth factor (0 for a latent model).
      vae: ``FlaxAutoencoderKL`` of a latent model, else None.
      scaling_factor: latents = scaling_factor · VAE mean.
    """

    unet: Any
    text_encoder: Any
    noise_scheduler: Any
    noise_state: Any
    sampler: Any
    sampler_state: Any
    image_size: int
    sample_shape: tuple[int, int, int]
    prompt_length: int
    null_tokens: np.ndarray
    null_mask: np.ndarray
    tokenize: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    patch_size: int = 0
    vae: Any = None
    scaling_factor: float = 1.0


def _schedulers(config: dict[str, Any] | None = None, directory: str | None = None) -> dict[str, Any]:
    """The ``DiffusionModel`` fields of its schedulers, from a schedule or a directory's ``scheduler/``."""
    from diffusers import FlaxDDIMScheduler, FlaxDDPMScheduler

    if directory is not None:
        ddpm, ddpm_state = FlaxDDPMScheduler.from_pretrained(directory, subfolder="scheduler")
        ddim, ddim_state = FlaxDDIMScheduler.from_pretrained(directory, subfolder="scheduler")
    else:
        ddpm, ddim = FlaxDDPMScheduler(**config), FlaxDDIMScheduler(**config)
        ddpm_state, ddim_state = ddpm.create_state(), ddim.create_state()
    return {"noise_scheduler": ddpm, "noise_state": ddpm_state, "sampler": ddim, "sampler_state": ddim_state}


def tiny_diffusion_model(
    vocab_size: int,
    *,
    prompt_length: int,
    image_size: int = 32,
    patch_size: int = 2,
    block_channels: tuple[int, ...] = (32, 64),
    layers_per_block: int = 1,
    attention_heads: int = 2,
    text_hidden_size: int = 32,
    text_layers: int = 1,
    num_train_timesteps: int = 1000,
    beta_schedule: str = "squaredcos_cap_v2",
    prediction_type: str = "v_prediction",
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
) -> DiffusionModel:
    """A small pixel-space text-to-image model (random weights: ``init_params``).

    The UNet has ``len(block_channels)`` levels; only the lowest-resolution level (and the mid
    block) carries attention, self and cross, so the full-resolution level stays convolutional.
    Channel counts must be multiples of 32 (diffusers' GroupNorm has 32 groups).

    Args:
      vocab_size: size of the prompt vocabulary (scene words).
      prompt_length: L tokens per prompt incl. ``<eos>``.
      image_size: H = W, pixels; a multiple of ``patch_size · 2^(levels − 1)``.
      patch_size: space-to-depth factor (1: plain pixels).
      block_channels: UNet channels per level.
      attention_heads: heads of every attention layer.
      text_hidden_size / text_layers: the CLIP text encoder's width and depth (also the UNet's
        cross-attention width).
      beta_schedule: diffusers' name of the noise schedule.
      prediction_type: what the UNet predicts, diffusers' names: "epsilon" (the noise ε, as
        Stable Diffusion 1.x), "v_prediction" (v = √ᾱ ε − √(1−ᾱ) x₀, as SD 2.x) or "sample".
        A tiny ε-model trained for a few hundred updates samples noise: at high t it must learn
        the identity x_t ↦ ε, and DDIM amplifies that error by 1/√ᾱ_t; v-prediction does not.
    """
    from diffusers import FlaxUNet2DConditionModel
    from transformers import CLIPTextConfig, FlaxCLIPTextModel

    _quiet_diffusers()
    levels = len(block_channels)
    if any(channels % 32 for channels in block_channels):
        raise ValueError(f"block_channels must be multiples of 32 (GroupNorm groups); got {block_channels}.")
    if patch_size < 1 or image_size % (patch_size * 2 ** (levels - 1)):
        raise ValueError(
            f"image_size {image_size} must be a multiple of patch_size · 2^(levels−1) = "
            f"{patch_size * 2 ** (levels - 1)}."
        )
    channels = 3 * patch_size**2
    side = image_size // patch_size
    unet = FlaxUNet2DConditionModel(
        sample_size=side,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D",) * (levels - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
        block_out_channels=tuple(block_channels),
        layers_per_block=layers_per_block,
        attention_head_dim=attention_heads,  # diffusers' Flax UNet reads this as the number of heads
        cross_attention_dim=text_hidden_size,
    )
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=text_hidden_size,
        intermediate_size=2 * text_hidden_size,
        num_hidden_layers=text_layers,
        num_attention_heads=max(1, text_hidden_size // 16),
        max_position_embeddings=prompt_length,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    text_encoder = FlaxCLIPTextModel(text_config, _do_init=False)
    schedule = {
        "num_train_timesteps": num_train_timesteps,
        "beta_schedule": beta_schedule,
        "prediction_type": prediction_type,
        "clip_sample": True,
    }
    null_tokens = np.full((prompt_length,), pad_id, np.int32)
    null_tokens[0] = eos_id

    def tokenize(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.asarray(tokens, np.int32)
        if tokens.shape[-1] != prompt_length:
            raise ValueError(f"Prompts must have {prompt_length} tokens; got shape {tokens.shape}.")
        return tokens, (tokens != pad_id).astype(np.int32)

    return DiffusionModel(
        unet=unet,
        text_encoder=text_encoder,
        **_schedulers(schedule),
        image_size=image_size,
        sample_shape=(channels, side, side),
        prompt_length=prompt_length,
        null_tokens=null_tokens,
        null_mask=(null_tokens != pad_id).astype(np.int32),
        tokenize=tokenize,
        patch_size=patch_size,
    )


def _init_fn(model: DiffusionModel) -> Callable[[jax.Array], PyTree]:
    if model.vae is not None:
        raise ValueError("init_params builds tiny models only; load a Stable Diffusion's weights instead.")
    _quiet_diffusers()
    length = model.prompt_length

    def build(key):
        unet_key, text_key = jax.random.split(key)
        params = {
            "unet": model.unet.init_weights(unet_key),
            "text_encoder": model.text_encoder.init_weights(text_key, (1, length)),
        }
        return traverse_util.unflatten_dict(traverse_util.flatten_dict(params))  # plain dicts

    return build


def init_params(model: DiffusionModel, key: jax.Array) -> PyTree:
    """Random params ``{"unet", "text_encoder"}`` of a tiny model, built in one jit (fast on CPU);
    traced as it is inside another transformation (e.g. ``jax.eval_shape``), where a nested jit
    cannot take compiler options."""
    if isinstance(key, jax.core.Tracer):
        return _init_fn(model)(key)
    return jax.jit(_init_fn(model), compiler_options=_FAST_COMPILE)(key)


def param_shapes(model: DiffusionModel) -> PyTree:
    """``jax.ShapeDtypeStruct`` of every param of a tiny model (nothing is computed)."""
    return jax.eval_shape(_init_fn(model), jax.random.PRNGKey(0))


SD_SUBFOLDERS = ("unet", "text_encoder", "vae", "scheduler", "tokenizer")


def _diffusers_weights(directory: str) -> bool:
    """from_pt for a diffusers subfolder: True for PyTorch ``.bin`` weights, False for Flax msgpack."""
    names = set(os.listdir(directory))
    if "diffusion_flax_model.msgpack" in names:
        return False
    if "diffusion_pytorch_model.bin" in names:
        return True
    raise ValueError(
        f"{directory} has neither diffusion_flax_model.msgpack nor diffusion_pytorch_model.bin "
        "(diffusers' Flax loader reads only these two formats)."
    )


def load_stable_diffusion(
    directory: str | os.PathLike,
    decode_prompt: Callable[[np.ndarray], str],
    *,
    image_size: int | None = None,
) -> tuple:
    """(model, params) from a local Stable Diffusion directory (diffusers layout).

    Args:
      directory: holds ``unet/``, ``text_encoder/``, ``vae/``, ``scheduler/`` and ``tokenizer/``.
      decode_prompt: (L,) prompt token ids -> text (e.g. the scene vocabulary's ``decode``); the
        model's ``tokenize`` maps it over the rows and encodes the texts with the CLIP tokenizer.
      image_size: pixels of the generated images (default: UNet sample size × the VAE's factor).

    Raises:
      ValueError: a missing subfolder or weights in a format the Flax loaders cannot read.
    """
    from diffusers import FlaxAutoencoderKL, FlaxUNet2DConditionModel
    from transformers import CLIPTokenizer

    _quiet_diffusers()
    directory = os.fspath(directory)
    missing = [name for name in SD_SUBFOLDERS if not os.path.isdir(os.path.join(directory, name))]
    if missing:
        raise ValueError(
            f"{directory} is not a Stable Diffusion directory: it lacks {', '.join(missing)} "
            f"(expected subfolders {', '.join(SD_SUBFOLDERS)})."
        )
    unet_dir, vae_dir = os.path.join(directory, "unet"), os.path.join(directory, "vae")
    unet, unet_params = FlaxUNet2DConditionModel.from_pretrained(
        unet_dir, from_pt=_diffusers_weights(unet_dir), local_files_only=True
    )
    vae, vae_params = FlaxAutoencoderKL.from_pretrained(
        vae_dir, from_pt=_diffusers_weights(vae_dir), local_files_only=True
    )
    text_encoder, text_params = hf.load_flax_pretrained(os.path.join(directory, "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(directory, "tokenizer"), local_files_only=True)
    length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    side = unet.config.sample_size

    def encode_texts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encoded = tokenizer(
            texts, padding="max_length", max_length=length, truncation=True, return_tensors="np"
        )
        return encoded["input_ids"].astype(np.int32), encoded["attention_mask"].astype(np.int32)

    def tokenize(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, _ = encode_texts([decode_prompt(row) for row in np.asarray(tokens)])
        return ids, np.ones_like(ids)  # Stable Diffusion attends to the padding too

    null_ids, _ = encode_texts([""])
    model = DiffusionModel(
        unet=unet,
        text_encoder=text_encoder,
        **_schedulers(directory=directory),
        image_size=image_size or side * factor,
        sample_shape=(unet.config.in_channels, side, side),
        prompt_length=length,
        null_tokens=null_ids[0],
        null_mask=np.ones_like(null_ids[0]),
        tokenize=tokenize,
        vae=vae,
        scaling_factor=float(vae.config.scaling_factor),
    )
    params = {"unet": unet_params, "text_encoder": text_params, "vae": vae_params}
    return model, jax.tree.map(jnp.asarray, params)


# --------------------------------------------------------------------------- images <-> samples


def images_to_samples(model: DiffusionModel, params: PyTree, images: jax.Array) -> jax.Array:
    """(B, H, W, 3) images in [0, 1] -> (B, C, h, w) UNet samples (pixels in [-1, 1] or VAE latents)."""
    pixels = 2.0 * images - 1.0
    if model.vae is not None:
        posterior = model.vae.apply(
            {"params": params["vae"]}, jnp.transpose(pixels, (0, 3, 1, 2)), method=model.vae.encode
        ).latent_dist
        return posterior.mean * model.scaling_factor
    p = model.patch_size
    batch, height, width, _ = pixels.shape
    blocks = pixels.reshape(batch, height // p, p, width // p, p, 3).transpose(0, 5, 2, 4, 1, 3)
    return blocks.reshape(batch, 3 * p * p, height // p, width // p)


def samples_to_images(model: DiffusionModel, params: PyTree, samples: jax.Array) -> jax.Array:
    """(B, C, h, w) UNet samples -> (B, H, W, 3) images in [0, 1] (the inverse of ``images_to_samples``)."""
    if model.vae is not None:
        decoded = model.vae.apply(
            {"params": params["vae"]}, samples / model.scaling_factor, method=model.vae.decode
        ).sample
        pixels = jnp.transpose(decoded, (0, 2, 3, 1))
    else:
        p = model.patch_size
        batch, _, h, w = samples.shape
        pixels = (
            samples.reshape(batch, 3, p, p, h, w).transpose(0, 4, 2, 5, 3, 1).reshape(batch, h * p, w * p, 3)
        )
    return jnp.clip((pixels + 1.0) / 2.0, 0.0, 1.0)


# --------------------------------------------------------------------------- denoising


def encode_prompts(model: DiffusionModel, params: PyTree, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, L) token ids and attention mask -> (B, L, D) ``encoder_hidden_states`` of the UNet."""
    return model.text_encoder(tokens, attention_mask=mask, params=params["text_encoder"]).last_hidden_state


def predict_noise(
    model: DiffusionModel, params: PyTree, samples: jax.Array, timesteps: jax.Array, context: jax.Array
) -> jax.Array:
    """The UNet's output (ε, v or x₀: the scheduler's ``prediction_type``) for (B, C, h, w) noisy
    samples, (B,) int timesteps and (B, L, D) prompt states.

    On XLA:CPU a convolution's kernel gradient runs ~35× slower inside a while loop than outside
    one (measured on jax 0.9.2, 2 cores): keep ``num_epochs = num_minibatches = 1`` when fine-tuning
    on CPU, so that the trainer unrolls its scans.
    """
    return model.unet.apply({"params": params["unet"]}, samples, timesteps, context).sample


def denoising_target(
    model: DiffusionModel, samples: jax.Array, noise: jax.Array, timesteps: jax.Array
) -> jax.Array:
    """What the UNet learns to output for x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε: ε, v or x₀ (the scheduler's
    ``prediction_type``)."""
    prediction_type = model.noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return model.noise_scheduler.get_velocity(model.noise_state, samples, noise, timesteps)
    if prediction_type == "sample":
        return samples
    raise ValueError(f"Unknown prediction_type {prediction_type!r} in the noise scheduler's config.")


def noise_prediction_loss(
    model: DiffusionModel,
    params: PyTree,
    samples: jax.Array,
    tokens: jax.Array,
    mask: jax.Array,
    key: jax.Array,
) -> jax.Array:
    """Per-example denoising loss ‖ε_θ(x_t, t, Q) − ε‖² (mean over sample dims), t ~ U{0..T−1}, ε ~ N(0, I).

    For a v-prediction model the loss is ‖v_θ − v‖², which equals the ε-loss of the implied noise
    estimate divided by ᾱ_t: the same objective with another weighting over t.

    Args:
      samples: (B, C, h, w) clean UNet samples x₀.
      tokens / mask: (B, L) prompts Q.

    Returns:
      (B,) losses; the DDPM objective is their mean, Eq. 19 of the paper weights them by r(x₀).
    """
    time_key, noise_key = jax.random.split(key)
    batch = samples.shape[0]
    timesteps = jax.random.randint(time_key, (batch,), 0, model.noise_scheduler.config.num_train_timesteps)
    noise = jax.random.normal(noise_key, samples.shape, samples.dtype)
    noisy = model.noise_scheduler.add_noise(model.noise_state, samples, noise, timesteps)
    context = encode_prompts(model, params, tokens, mask)
    predicted = predict_noise(model, params, noisy, timesteps, context)
    target = denoising_target(model, samples, noise, timesteps)
    return jnp.mean(jnp.square(predicted - target), axis=(1, 2, 3))


def drop_prompts(model: DiffusionModel, tokens: jax.Array, mask: jax.Array, probability: float, key) -> tuple:
    """Replaces each prompt by the empty one with ``probability`` (trains classifier-free guidance)."""
    dropped = jax.random.bernoulli(key, probability, (tokens.shape[0], 1))
    return (
        jnp.where(dropped, jnp.asarray(model.null_tokens)[None], tokens),
        jnp.where(dropped, jnp.asarray(model.null_mask)[None], mask),
    )


def initial_noise(model: DiffusionModel, keys: jax.Array) -> jax.Array:
    """(B, C, h, w) standard normal x_T, one key per prompt (B keys): the same key, the same noise."""
    return jax.vmap(lambda key: jax.random.normal(key, model.sample_shape))(keys)


def prompt_keys(base_key: jax.Array, prompt_ids: jax.Array) -> jax.Array:
    """One key per prompt, ``fold_in(base_key, id)``: a prompt's noise is independent of its batch."""
    return jax.vmap(lambda index: jax.random.fold_in(base_key, index))(prompt_ids)


def sample(
    model: DiffusionModel,
    params: PyTree,
    tokens: jax.Array,
    mask: jax.Array,
    noise: jax.Array,
    *,
    num_steps: int,
    guidance_scale: float = 1.0,
) -> jax.Array:
    """Deterministic DDIM (η = 0) from ``noise``: (B, C, h, w) clean samples x₀, jit-able.

    Args:
      tokens / mask: (B, L) prompts.
      noise: (B, C, h, w) x_T (``initial_noise``).
      num_steps: DDIM steps (static).
      guidance_scale: classifier-free guidance w (static); 1 runs the conditional model only,
        w > 1 also the empty prompt: ε = ε_∅ + w (ε_Q − ε_∅).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    state = model.sampler.set_timesteps(model.sampler_state, num_steps, noise.shape)
    context = encode_prompts(model, params, tokens, mask)
    guided = guidance_scale != 1.0
    if guided:
        batch = tokens.shape[0]
        null = encode_prompts(
            model,
            params,
            jnp.broadcast_to(jnp.asarray(model.null_tokens), tokens.shape),
            jnp.broadcast_to(jnp.asarray(model.null_mask), mask.shape),
        )
        context = jnp.concatenate([context, null], axis=0)

    def step(current, timestep):
        inputs = jnp.concatenate([current, current], axis=0) if guided else current
        times = jnp.full((inputs.shape[0],), timestep, jnp.int32)
        predicted = predict_noise(model, params, inputs, times, context)
        if guided:
            conditional, unconditional = predicted[:batch], predicted[batch:]
            predicted = unconditional + guidance_scale * (conditional - unconditional)
        return model.sampler.step(state, predicted, timestep, current).prev_sample, None

    timesteps = jnp.asarray(state.timesteps, jnp.int32)
    clean, _ = jax.lax.scan(step, noise * state.init_noise_sigma, timesteps)
    return clean


def generate_images(
    model: DiffusionModel,
    params: PyTree,
    tokens: jax.Array,
    mask: jax.Array,
    keys: jax.Array,
    *,
    num_steps: int,
    guidance_scale: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Samples (B, C, h, w) and their images (B, H, W, 3) in [0, 1] for B prompts, one noise key each."""
    samples = sample(
        model,
        params,
        tokens,
        mask,
        initial_noise(model, keys),
        num_steps=num_steps,
        guidance_scale=guidance_scale,
    )
    return samples, samples_to_images(model, params, samples)


# --------------------------------------------------------------------------- trainable subset


def _is_trainable(path: tuple[str, ...]) -> bool:
    """UNet cross-attention (``attn2``, with its norm) and every UNet bias/scale leaf."""
    if path[0] != "unet":
        return False
    return "attn2" in path or path[-1] in ("bias", "scale")


def trainable_labels(params: PyTree) -> PyTree:
    """``"train"``/``"freeze"`` per leaf (for ``optax.multi_transform``): see ``trainable_mask``."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({path: TRAIN if _is_trainable(path) else FREEZE for path in flat})


def trainable_mask(params: PyTree) -> PyTree:
    """True per leaf fine-tuning may change: the UNet's cross-attention layers (``attn2``) and every
    UNet bias and normalization scale (paper Appendix E); the text encoder and VAE stay frozen."""
    return jax.tree.map(lambda label: label == TRAIN, trainable_labels(params))


def trainable_fraction(params: PyTree) -> float:
    """Fraction of all parameters (every leaf of ``params``) that ``trainable_mask`` lets train."""
    flat = traverse_util.flatten_dict(params)
    total = sum(int(np.prod(leaf.shape)) for leaf in flat.values())
    trained = sum(int(np.prod(leaf.shape)) for path, leaf in flat.items() if _is_trainable(path))
    return trained / max(total, 1)


def masked_optimizer(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optimizer`` on the trainable leaves, ``optax.set_to_zero`` on the others (bit-identical)."""
    return optax.multi_transform({TRAIN: optimizer, FREEZE: optax.set_to_zero()}, trainable_labels)
