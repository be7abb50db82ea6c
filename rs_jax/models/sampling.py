"""Autoregressive sampling inside ``jit``, for any model that decodes one token at a time.

The model is hidden behind ``step_fn(cache, tokens, step) -> (logits, cache)``: given the
token fed at decoding step ``step`` (``first_tokens`` at step 0, then the token sampled at
the previous step) it returns the logits of the next token and the updated cache (a KV
cache, an encoder output, anything). ``sample`` runs one ``lax.scan`` of ``max_length``
steps, so a whole batch of generations is one compiled loop with static shapes; rows that
have emitted ``eos_id`` keep emitting ``pad_id``.

>>> import jax, jax.numpy as jnp
>>> logits = jnp.log(jnp.array([0.1, 0.2, 0.7]))
>>> step_fn = lambda cache, tokens, step: (jnp.broadcast_to(logits, (tokens.shape[0], 3)), cache)
>>> out = sample(step_fn, (), jnp.zeros((2,), jnp.int32), jax.random.key(0), max_length=4,
...              eos_id=None, greedy=True)
>>> out.tokens
Array([[2, 2, 2, 2],
       [2, 2, 2, 2]], dtype=int32)

Log-probabilities: ``Sample.log_probs`` are always those of the *raw model distribution*,
``log_softmax(logits)`` at temperature 1 before any top-k/top-p filtering, evaluated at the
emitted token. That is the quantity a PPO/REINFORCE loss recomputes from a forward pass of
the same params (``rs_jax.models.causal_lm.sequence_outputs``), so the PPO ratio starts at 1.
It equals the log-probability of the distribution actually sampled from only in the
paper's setting (temperature 1, ``top_k=0``, ``top_p=1``); with other settings the samples
come from a different (behaviour) policy and the caller must account for it.

Decoding-time mixing: ``sample_mixture`` decodes from N models at once (N forward passes per
token, each model with its own KV cache, vmapped over its stacked params) and samples every token
from the mixture ``mix_log_probs`` of their next-token distributions at weights w (N,): the
geometric mixture softmax(Σᵢ wᵢ log pᵢ) of MOD ("Decoding-time language model alignment with
multiple objectives", NeurIPS 2024; ``rule="logits"``) or the arithmetic mixture Σᵢ wᵢ pᵢ of
prediction ensembling (``rule="probs"``). The weights are operands: one compiled sampler serves
every w. No params are merged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Required, TypedDict, Unpack

import jax
import jax.numpy as jnp

PyTree = Any
StepFn = Callable[[PyTree, jax.Array, jax.Array], tuple[jax.Array, PyTree]]
# params -> (step_fn as a callable pytree, initial cache, first tokens (B,)): one model's decoding.
StartFn = Callable[[PyTree], tuple[StepFn, PyTree, jax.Array]]
MIXING_RULES = ("logits", "probs")


class TokenPicking(TypedDict, total=False):
    """How ``sample`` picks each token from the logits; every key is ``sample``'s argument of that name."""

    temperature: float
    top_k: int
    top_p: float
    greedy: bool


class Decoding(TokenPicking, total=False):
    """``TokenPicking`` and when rows stop: ``eos_id`` (required) and ``pad_id``, as ``sample``'s."""

    eos_id: Required[int | jax.Array | None]
    pad_id: int


class Sample(NamedTuple):
    """A batch of sampled sequences.

    Attributes:
      tokens: (B, L) int32 sampled tokens; ``pad_id`` after a row's first EOS.
      log_probs: (B, L) float32 log-probability of each token under the raw model
        distribution ``log_softmax(logits)`` (temperature 1, no top-k/top-p filtering; see
        the module docstring); 0 where ``mask`` is False.
      mask: (B, L) bool, True at generated positions up to and including the first EOS.
    """

    tokens: jax.Array
    log_probs: jax.Array
    mask: jax.Array


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Sets the logits of tokens outside the top-k / top-p (nucleus) set to -inf.

    Top-k keeps the ``top_k`` largest logits. Top-p then keeps, in order of decreasing
    probability, every token whose preceding cumulative probability is below ``top_p`` (so the
    most likely token is always kept), as transformers' ``FlaxTopPLogitsWarper`` does. Tokens
    tied with the last kept one are kept too.

    Args:
      logits: (..., V) float logits (apply the temperature before).
      top_k: keep this many tokens; 0 keeps all.
      top_p: nucleus mass in (0, 1]; 1.0 keeps all.

    Returns:
      (..., V) logits with -inf at filtered-out tokens.
    """
    _check_filters(top_k, top_p)
    if top_k and top_k < logits.shape[-1]:
        kth_largest = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = -jnp.sort(-logits, axis=-1)
        sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
        n_kept = jnp.maximum(jnp.sum(mass_before < top_p, axis=-1, keepdims=True), 1)
        cutoff = jnp.take_along_axis(sorted_logits, n_kept - 1, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def _check_filters(top_k: int, top_p: float) -> None:
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = no top-k filtering), got {top_k!r}.")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1.0 = no nucleus filtering), got {top_p!r}.")


def sample(
    step_fn: StepFn,
    cache: PyTree,
    first_tokens: jax.Array,
    key: jax.Array,
    *,
    max_length: int,
    eos_id: int | None,
    pad_id: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
) -> Sample:
    """Samples ``max_length`` tokens per row with one ``lax.scan`` (jit-friendly).

    Args:
      step_fn: ``(cache, tokens (B,) int32, step () int32) -> (logits (B, V), cache)``; the
        logits of the token emitted at ``step`` given ``tokens``, the token emitted at
        ``step - 1`` (``first_tokens`` at step 0). Must keep the cache's structure/shapes.
      cache: the initial cache (any pytree), e.g. a KV cache already prefilled with the prompt.
      first_tokens: (B,) int tokens fed at step 0 (a causal LM's last prompt token, an
        encoder-decoder's decoder start token).
      key: PRNG key (typed or raw); step ``t`` samples with ``fold_in(key, t)``.
      max_length: number of tokens to generate, L ≥ 1.
      eos_id: end-of-sequence token (an int, or a traced int32 scalar so that one compiled
        program serves several); a row stops after emitting it. None: never stop.
      pad_id: token emitted by finished rows.
      temperature: divides the logits before sampling (> 0). Ignored when ``greedy``.
      top_k: sample among the ``top_k`` most likely tokens; 0 = no filtering.
      top_p: nucleus sampling mass; 1.0 = no filtering (the paper's setting is top_k=0, top_p=1).
      greedy: emit ``argmax(logits)`` instead of sampling.

    Returns:
      A ``Sample`` of (B, L) arrays. ``log_probs`` are raw-model log-probs (temperature 1, no
      filtering) of the emitted tokens, whatever the sampling settings; see the module docstring.

    Raises:
      ValueError: on invalid settings or if ``step_fn`` returns logits of the wrong shape.
    """
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an int >= 1, got {max_length!r}.")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature!r}.")
    _check_filters(top_k, top_p)
    first_tokens = jnp.asarray(first_tokens)
    if first_tokens.ndim != 1 or not jnp.issubdtype(first_tokens.dtype, jnp.integer):
        raise ValueError(
            f"first_tokens must be a (B,) integer array, got shape {first_tokens.shape} and "
            f"dtype {first_tokens.dtype}."
        )
    batch = first_tokens.shape[0]

    def body(carry, step):
        cache, tokens, finished = carry
        logits, cache = step_fn(cache, tokens, step)
        if logits.ndim != 2 or logits.shape[0] != batch:
            raise ValueError(f"step_fn must return logits of shape (B={batch}, V); got {logits.shape}.")
        logits = logits.astype(jnp.float32)
        if greedy:
            new_tokens = jnp.argmax(logits, axis=-1)
        else:
            adjusted = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
            new_tokens = jax.random.categorical(jax.random.fold_in(key, step), adjusted, axis=-1)
        new_tokens = jnp.where(finished, pad_id, new_tokens).astype(jnp.int32)
        log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), new_tokens[:, None], axis=-1)
        active = ~finished
        log_probs = jnp.where(active, log_probs[:, 0], 0.0)
        if eos_id is not None:
            finished = finished | (new_tokens == eos_id)
        return (cache, new_tokens, finished), (new_tokens, log_probs, active)

    init = (cache, first_tokens.astype(jnp.int32), jnp.zeros((batch,), bool))
    steps = jnp.arange(max_length, dtype=jnp.int32)
    _, (tokens, log_probs, mask) = jax.lax.scan(body, init, steps)
    return Sample(tokens.T, log_probs.T, mask.T)


def mix_log_probs(logits: jax.Array, weights: jax.Array, *, rule: str = "logits") -> jax.Array:
    """The log-probabilities (up to a constant per row) of a mixture of N next-token distributions.

    ``rule="logits"`` (MOD's geometric mixture): Σᵢ wᵢ log_softmax(logitsᵢ), which a sampler
    turns into softmax(Σᵢ wᵢ log pᵢ). ``rule="probs"`` (prediction ensembling, the arithmetic
    mixture): log Σᵢ wᵢ softmax(logitsᵢ). Members with wᵢ = 0 are left out (their -inf logits
    never turn into NaN), so a one-hot w gives exactly ``log_softmax`` of that member's logits.

    Args:
      logits: (N, B, V) float logits of the N members (-inf: a token a member forbids).
      weights: (N,) non-negative weights (summing to 1 for a λ of the simplex); may be traced.
      rule: "logits" or "probs".

    Returns:
      (B, V) float32 mixed log-probabilities; normalized for "probs" when Σ w = 1, unnormalized
      for "logits" (softmax normalizes them).

    Raises:
      ValueError: on an unknown rule or shapes that disagree.
    """
    if rule not in MIXING_RULES:
        raise ValueError(f"rule must be one of {MIXING_RULES}, got {rule!r}.")
    if logits.ndim != 3 or jnp.shape(weights) != (logits.shape[0],):
        raise ValueError(
            f"logits must be (N, B, V) and weights (N,); got {logits.shape} and {jnp.shape(weights)}."
        )
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    weights = jnp.asarray(weights, jnp.float32)[:, None, None]
    present = weights != 0
    if rule == "logits":
        return jnp.sum(jnp.where(present, weights * log_probs, 0.0), axis=0)
    terms = jnp.where(present, log_probs + jnp.log(jnp.where(present, weights, 1.0)), -jnp.inf)
    return jax.nn.logsumexp(terms, axis=0)


def _start_member(start: StartFn, params: PyTree) -> tuple[StepFn, PyTree, jax.Array]:
    step_fn, cache, first_tokens = start(params)
    if not isinstance(step_fn, jax.tree_util.Partial):
        raise ValueError(
            "sample_mixture needs start(params) to return its step_fn as a jax.tree_util.Partial "
            f"(a callable pytree whose leaves are arrays, vmapped over the members); got {type(step_fn)}."
        )
    return step_fn, cache, first_tokens


def _member_step(tokens: jax.Array, step: jax.Array, step_fn: StepFn, cache: PyTree):
    return step_fn(cache, tokens, step)


def sample_mixture(
    start: StartFn,
    stacked_params: PyTree,
    weights: jax.Array,
    key: jax.Array,
    *,
    rule: str = "logits",
    max_length: int,
    **decoding: Unpack[Decoding],
) -> Sample:
    """Samples from the mixture of N models' next-token distributions, N forward passes per token.

    ``start`` runs once per member, vmapped over ``stacked_params`` (each member prefills its
    own KV cache); every step then runs the N members' step functions, vmapped, on the token
    emitted before, mixes their logits with ``mix_log_probs(·, weights, rule=rule)`` and hands
    the mixture to the loop of ``sample`` (same keys, filtering, EOS and padding). With a
    one-hot ``weights`` = e_i this samples the same tokens as ``sample`` on member i alone with
    the same key. ``weights`` is an operand: under ``jit`` one compile serves every w.

    Args:
      start: ``params -> (step_fn, cache, first_tokens (B,))`` of one member, as ``sample`` takes
        them; ``step_fn`` must be a ``jax.tree_util.Partial`` whose leaves are arrays (its
        static parts in ``Partial``'s function, e.g. a ``functools.partial`` over the model), so
        that the vmap over members can carry it. ``first_tokens`` must not depend on the params.
      stacked_params: the N members' params with a leading axis N (``soup.stack_experts``).
      weights: (N,) non-negative mixing weights w.
      key: PRNG key, as ``sample``.
      rule: "logits" (MOD: softmax(Σᵢ wᵢ log pᵢ)) or "probs" (ensembling: Σᵢ wᵢ pᵢ).
      max_length: as ``sample``.
      **decoding: eos_id (required), pad_id, temperature, top_k, top_p, greedy, as ``sample``;
        temperature and filters apply to the mixed log-probabilities.

    Returns:
      A ``Sample`` of (B, L) arrays; ``log_probs`` are those of the mixed distribution
      (temperature 1, unfiltered) at the emitted tokens.

    Raises:
      ValueError: on an unknown rule, weights that are not (N,), or a ``step_fn`` that is not a
        ``Partial``.
    """
    if rule not in MIXING_RULES:
        raise ValueError(f"rule must be one of {MIXING_RULES}, got {rule!r}.")
    n_members = {leaf.shape[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(stacked_params)}
    weights = jnp.asarray(weights)
    if len(n_members) != 1 or None in n_members or weights.shape != (next(iter(n_members)),):
        raise ValueError(
            f"stacked_params need one leading axis N shared by every leaf and weights (N,); got "
            f"leading sizes {sorted(n_members, key=str)} and weights of shape {weights.shape}."
        )
    step_fns, caches, first_tokens = jax.vmap(lambda params: _start_member(start, params))(stacked_params)
    members_step = jax.vmap(_member_step, in_axes=(None, None, 0, 0))

    def mixed_step(caches, tokens, step):
        logits, caches = members_step(tokens, step, step_fns, caches)
        return mix_log_probs(logits, weights, rule=rule), caches

    return sample(mixed_step, caches, first_tokens[0], key, max_length=max_length, **decoding)
