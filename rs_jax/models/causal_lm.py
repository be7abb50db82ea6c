"""A causal-LM policy for RLHF on transformers-4.x Flax causal LMs (LLaMA, Mistral, Gemma, GPT-2,
GPT-Neo, GPT-J, OPT, …): jit-able sampling with a KV cache, and a cache-free forward pass that
recomputes the same log-probs for a PPO loss, plus a value head.

Conventions (one for every function here):

* Prompts are **left-padded**: ``prompt_ids (B, P)`` with ``prompt_mask (B, P)`` 0 on the
  left pads, 1 on the real tokens, so every prompt ends at column P-1 and the response starts
  at column P for every row.
* Positions count real tokens only, ``position_ids = max(cumsum(mask) - 1, 0)``.
  transformers' own generation uses ``cumsum(mask) - 1`` (-1 on pads); pads are masked out
  of attention, so their position never matters, and 0 keeps every embedding lookup in range.
* The response ``(B, R)`` is what ``generate`` returns: tokens, then ``pad_id`` after EOS, with
  ``mask`` True up to and including EOS.

Why not transformers' ``FlaxGenerationMixin.generate``: it returns token ids only (no
log-probs of the sampled tokens, which PPO needs); with ``do_sample=True`` it applies the
generation config's logits processors (``top_k=50`` by default), so the samples do not come
from the raw model distribution unless every default is overridden; its ``lax.while_loop``
has a data-dependent trip count; and it is tied to one model class, while the captioning task
decodes through an encoder-decoder. ``generate`` here is one fixed-length ``lax.scan``
(``rs_jax.models.sampling``) that returns the raw-model log-probs the PPO ratio needs; the
test-suite checks that its greedy tokens equal transformers' ``generate`` on left-padded prompts.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Literal, Unpack

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rs_jax.models import hf, sampling

PyTree = Any


# --------------------------------------------------------------------------- loading


def _raw_key(key: jax.Array) -> jax.Array:
    """transformers' Flax code expects raw uint32[2] keys."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _check_causal_lm(model: Any) -> None:
    if not hasattr(model, "init_cache") or not hasattr(model, "prepare_inputs_for_generation"):
        raise ValueError(
            f"{type(model).__name__} is not a Flax causal LM with a KV cache (needs init_cache); "
            "load a *ForCausalLM / *LMHeadModel checkpoint."
        )


def load_causal_lm(directory: str | os.PathLike) -> tuple[Any, PyTree]:
    """Loads (model, params) of a Flax causal LM from a local HF directory (no hub access).

    Raises:
      ValueError: if the directory is not a HF model directory or not a causal LM.
    """
    model, params = hf.load_flax_pretrained(directory)
    _check_causal_lm(model)
    return model, params


def init_causal_lm(
    config: Any, key: jax.Array, *, dtype: Any = jnp.float32, method: Literal["hf", "fast"] = "hf"
) -> tuple[Any, PyTree]:
    """Builds a randomly initialized Flax causal LM from a transformers config.

    Args:
      config: e.g. ``transformers.LlamaConfig(...)`` or ``GPT2Config(...)``.
      key: PRNG key (typed or raw).
      dtype: computation dtype of the model (params are float32).
      method: ``"hf"`` runs transformers' own initializers (exact, but compiling one
        threefry draw per tensor takes seconds even for a tiny model). ``"fast"`` takes the
        shapes from ``jax.eval_shape`` and fills them from a single normal draw:
        N(0, ``config.initializer_range``²) for every ≥2-D tensor (kernels, embeddings),
        0 for 1-D ``bias`` leaves and 1 for other 1-D leaves (norm scales) — the same
        distributions as transformers' init for LLaMA/Mistral/GPT-2/GPT-Neo/OPT, not the same
        numbers. For tests and smoke runs.

    Returns:
      (model, params); the model is built with ``_do_init=False``, so pass ``params`` to every call.
    """
    import transformers

    mapping = transformers.FlaxAutoModelForCausalLM._model_mapping
    if type(config) not in mapping:
        raise ValueError(f"transformers has no Flax causal LM for {type(config).__name__}.")
    if method not in ("hf", "fast"):
        raise ValueError(f"method must be 'hf' or 'fast', got {method!r}.")
    model = mapping[type(config)](config, dtype=dtype, _do_init=False)
    raw_key = _raw_key(key)
    if method == "hf":
        return model, model.init_weights(raw_key, (1, 1))
    shapes = jax.eval_shape(lambda k: model.init_weights(k, (1, 1)), raw_key)
    return model, _fast_init(shapes, raw_key, float(getattr(config, "initializer_range", 0.02)))


def _fast_init(shapes: PyTree, key: jax.Array, std: float) -> PyTree:
    named = jax.tree_util.tree_flatten_with_path(shapes)
    treedef = jax.tree_util.tree_structure(shapes)
    sizes = [int(np.prod(leaf.shape)) for _, leaf in named[0]]
    draws = std * np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))
    leaves, offset = [], 0
    for (path, leaf), size in zip(named[0], sizes):
        name = str(getattr(path[-1], "key", path[-1]))
        if len(leaf.shape) >= 2:
            value = draws[offset : offset + size].reshape(leaf.shape)
        else:
            value = np.full(leaf.shape, 0.0 if name == "bias" else 1.0)
        offset += size
        leaves.append(jnp.asarray(value, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def tiny_llama(
    vocab_size: int,
    key: jax.Array,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 128,
    method: Literal["hf", "fast"] = "fast",
    **config_overrides: Any,
) -> tuple[Any, PyTree]:
    """A tiny random ``FlaxLlamaForCausalLM`` (grouped-query attention by default), for tests and smoke runs.

    ``config_overrides`` go to ``transformers.LlamaConfig``; ``method`` to ``init_causal_lm``
    (``"fast"`` by default: same distributions as transformers' init, far less compile time).

    Returns:
      (model, params).
    """
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        **config_overrides,
    )
    return init_causal_lm(config, key, method=method)


# --------------------------------------------------------------------------- shared helpers


def _max_positions(model: Any) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


@functools.lru_cache(maxsize=32)
def _accepts_position_ids(model_class: type) -> bool:
    return "position_ids" in inspect.signature(model_class.__call__).parameters


def _check_prompt(prompt_ids: jax.Array, prompt_mask: jax.Array) -> None:
    if prompt_ids.ndim != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(
            f"prompt_ids and prompt_mask must both be (B, P); got {prompt_ids.shape} and {prompt_mask.shape}."
        )
    if not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
        raise ValueError(f"prompt_ids must be integer token ids, got dtype {prompt_ids.dtype}.")
    if isinstance(prompt_mask, jax.core.Tracer):
        return
    mask = np.asarray(prompt_mask).astype(bool)
    if not mask[:, -1].all():
        raise ValueError(
            "Every prompt needs at least one real token and must end at the last column (pad left)."
        )
    if (mask[:, 1:] < mask[:, :-1]).any():
        raise ValueError("Prompts must be left-padded: prompt_mask must be 0…0 1…1 in every row.")


def _positions(mask: jax.Array) -> jax.Array:
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def _call(model: Any, params: PyTree, input_ids, attention_mask, position_ids, **kwargs) -> Any:
    if _accepts_position_ids(type(model)):
        kwargs["position_ids"] = position_ids
    return model(input_ids, attention_mask=attention_mask, params=params, **kwargs)


# --------------------------------------------------------------------------- sampling


def start_decoding(
    model: Any, params: PyTree, prompt_ids: jax.Array, prompt_mask: jax.Array, max_new_tokens: int
) -> tuple[jax.tree_util.Partial, PyTree, jax.Array]:
    """What ``sampling.sample`` needs to decode ``max_new_tokens`` after each left-padded prompt.

    The cache holds P + max_new_tokens positions: the prompt minus its last token is prefilled
    in one call; the step feeds the last prompt token at step 0, then each sampled token
    (``position = last prompt position + step``).

    Args:
      model: a transformers Flax causal LM (``load_causal_lm``, ``init_causal_lm``).
      params: its params (e.g. ``lora.apply_lora(base, lora_params, config)``).
      prompt_ids: (B, P) int, left-padded.
      prompt_mask: (B, P) 0/1 or bool, 0 on left pads.
      max_new_tokens: response length R.

    Returns:
      (step returning the (B, V) float32 logits of the next token, as a ``jax.tree_util.Partial``
      over the params so that ``sampling.sample_mixture`` can vmap it; the prefilled KV cache;
      the last prompt tokens (B,) to feed at step 0).

    Raises:
      ValueError: on malformed prompts or P + max_new_tokens beyond the model's positions.
    """
    _check_causal_lm(model)
    prompt_ids, prompt_mask = jnp.asarray(prompt_ids), jnp.asarray(prompt_mask)
    _check_prompt(prompt_ids, prompt_mask)
    batch, prompt_length = prompt_ids.shape
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    total = prompt_length + max_new_tokens
    limit = _max_positions(model)
    if limit is not None and total > limit:
        raise ValueError(
            f"Prompt length {prompt_length} + max_new_tokens {max_new_tokens} = {total} exceeds the "
            f"model's {limit} positions."
        )
    prompt_ids = prompt_ids.astype(jnp.int32)
    attention_mask = jnp.concatenate(
        [prompt_mask.astype(jnp.int32), jnp.ones((batch, max_new_tokens), jnp.int32)], axis=1
    )
    positions = _positions(prompt_mask)
    cache_shapes = jax.eval_shape(functools.partial(model.init_cache, batch, total))
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache_shapes)
    if prompt_length > 1:
        prefill = _call(
            model, params, prompt_ids[:, :-1], attention_mask, positions[:, :-1], past_key_values=cache
        )
        cache = prefill.past_key_values
    step = jax.tree_util.Partial(
        functools.partial(_decode_step, model), params, attention_mask, positions[:, -1]
    )
    return step, cache, prompt_ids[:, -1]


def _decode_step(model: Any, params: PyTree, attention_mask, last_position, cache, tokens, step):
    out = _call(
        model, params, tokens[:, None], attention_mask, (last_position + step)[:, None], past_key_values=cache
    )
    return out.logits[:, -1].astype(jnp.float32), out.past_key_values


def generate(
    model: Any,
    params: PyTree,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    **decoding: Unpack[sampling.Decoding],
) -> sampling.Sample:
    """Samples a response to each left-padded prompt with the model's KV cache (jit-able).

    ``start_decoding`` prefills the prompt, then ``sampling.sample`` decodes.

    Args:
      model: a transformers Flax causal LM (``load_causal_lm``, ``init_causal_lm``).
      params: its params (e.g. ``lora.apply_lora(base, lora_params, config)``).
      prompt_ids: (B, P) int, left-padded.
      prompt_mask: (B, P) 0/1 or bool, 0 on left pads.
      key: PRNG key.
      max_new_tokens: response length R.
      **decoding: eos_id (required), pad_id, temperature, top_k, top_p, greedy; see
        ``sampling.sample``.

    Returns:
      ``Sample`` of (B, R) ``tokens``, ``log_probs`` (raw-model, temperature 1, unfiltered;
      equal to what ``response_log_probs(sequence_outputs(...)[0])`` recomputes) and ``mask``.

    Raises:
      ValueError: on malformed prompts or P + max_new_tokens beyond the model's positions.
    """
    step_fn, cache, first_tokens = start_decoding(model, params, prompt_ids, prompt_mask, max_new_tokens)
    return sampling.sample(step_fn, cache, first_tokens, key, max_length=max_new_tokens, **decoding)


def generate_mixture(
    model: Any,
    stacked_params: PyTree,
    weights: jax.Array,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    *,
    rule: str = "logits",
    max_new_tokens: int,
    **decoding: Unpack[sampling.Decoding],
) -> sampling.Sample:
    """Responses decoded from the mixture of N param sets of one model (``sampling.sample_mixture``).

    Args:
      stacked_params: (N, ...) params of the N members (e.g. the base with each expert's LoRA).
      weights: (N,) mixing weights; ``rule``: "logits" (MOD) or "probs" (ensembling).
      The rest: as ``generate``.

    Returns:
      ``Sample`` of (B, R) arrays; with a one-hot ``weights`` the tokens of ``generate`` on that
      member with the same key.
    """
    return sampling.sample_mixture(
        lambda params: start_decoding(model, params, prompt_ids, prompt_mask, max_new_tokens),
        stacked_params,
        weights,
        key,
        rule=rule,
        max_length=max_new_tokens,
        **decoding,
    )


# --------------------------------------------------------------------------- scoring


def sequence_outputs(
    model: Any,
    params: PyTree,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    response_tokens: jax.Array,
    response_mask: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Logits and last hidden states *before* each response token, in one cache-free pass.

    Row b, column j holds the model's output at the position that predicts
    ``response_tokens[b, j]`` (prompt column P-1+j): the policy logits of that token and the
    hidden state a value head reads at that state.

    Args:
      model, params: as for ``generate``.
      prompt_ids, prompt_mask: (B, P), left-padded.
      response_tokens: (B, R) int.
      response_mask: (B, R) bool/0-1, True up to and including EOS (``Sample.mask``).

    Returns:
      (logits (B, R, V) float32, hidden (B, R, H)), the hidden state being the one fed to the
      LM head (after the final norm). Positions where ``response_mask`` is False hold
      meaningless values.
    """
    prompt_ids, prompt_mask = jnp.asarray(prompt_ids), jnp.asarray(prompt_mask)
    response_tokens, response_mask = jnp.asarray(response_tokens), jnp.asarray(response_mask)
    _check_prompt(prompt_ids, prompt_mask)
    if response_tokens.ndim != 2 or response_tokens.shape != response_mask.shape:
        raise ValueError(
            f"response_tokens and response_mask must both be (B, R); got {response_tokens.shape} "
            f"and {response_mask.shape}."
        )
    if response_tokens.shape[0] != prompt_ids.shape[0]:
        raise ValueError(
            f"Batch sizes differ: prompts {prompt_ids.shape[0]}, responses {response_tokens.shape[0]}."
        )
    prompt_length = prompt_ids.shape[1]
    input_ids = jnp.concatenate([prompt_ids, response_tokens[:, :-1]], axis=1).astype(jnp.int32)
    mask = jnp.concatenate([prompt_mask, response_mask[:, :-1]], axis=1).astype(jnp.int32)
    out = _call(model, params, input_ids, mask, _positions(mask), output_hidden_states=True)
    hidden = out.hidden_states[-1][:, prompt_length - 1 :]
    kernel = _head_kernel(model, params)
    # The LM head on the R response positions only: under jit the full (B, P + R - 1, V) logits
    # are dead code (XLA does not move the slice before the vocabulary matmul by itself).
    logits = out.logits[:, prompt_length - 1 :] if kernel is None else hidden @ kernel
    return logits.astype(jnp.float32), hidden


def _head_kernel(model: Any, params: PyTree) -> jax.Array | None:
    """(H, V) kernel of the LM head as transformers' Flax module applies it (a bias-free matmul of
    the last hidden states): GPT-2's tied input embedding or ``lm_head``, LLaMA's ``lm_head`` (its
    Flax module never ties); None for other families."""
    family = model.config.model_type
    if family == "gpt2":
        if model.config.tie_word_embeddings:
            return params["transformer"]["wte"]["embedding"].T
        return params["lm_head"]["kernel"]
    if family == "llama":
        return params["lm_head"]["kernel"]
    return None


def response_log_probs(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Log-probs of ``tokens`` under ``log_softmax(logits)``.

    Args:
      logits: (B, R, V), e.g. from ``sequence_outputs``.
      tokens: (B, R) int.
      mask: (B, R) bool.

    Returns:
      (B, R) float32, 0 where ``mask`` is False.
    """
    log_probs = jnp.take_along_axis(
        jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), tokens[..., None], -1
    )
    return jnp.where(mask, log_probs[..., 0], 0.0)


class ValueHead(nn.Module):
    """Per-token values from the LM's last hidden states: (B, R, H) -> (B, R) float32.

    A linear layer (small normal init, zero bias), like trl's value head; train its params
    with the LoRA params and read hidden states from ``sequence_outputs``.
    """

    kernel_init_std: float = 0.01

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        value = nn.Dense(
            1,
            dtype=jnp.float32,
            kernel_init=nn.initializers.normal(self.kernel_init_std),
            bias_init=nn.initializers.zeros,
        )(hidden.astype(jnp.float32))
        return value[..., 0]
