"""Merge rules: ways to combine N experts fine-tuned from one initialization θ₀ into one network.

Every rule has the call shape of ``soup.interpolate``: ``rule(experts, weights, *, <its
parameters>) -> params``, pure and jit-traceable, so that ``soup.sweep(..., merge=...)`` runs a
whole λ grid of it as one compiled program:

>>> import jax, jax.numpy as jnp
>>> from rs_jax import merge_rules, soup
>>> base = {"w": jnp.zeros(3)}
>>> experts = [{"w": jnp.array([1.0, -2.0, 0.0])}, {"w": jnp.array([0.5, 1.0, 3.0])}]
>>> merge_rules.ties(experts, [0.5, 0.5], base=base, density=1.0)["w"]
Array([ 0.75, -1.  ,  1.5 ], dtype=float32)
>>> rule = jax.tree_util.Partial(merge_rules.ties, base=base, density=1.0)  # θ₀: an operand
>>> soup.sweep(lambda params: params["w"], experts, soup.simplex_grid(2, 3), merge=rule).shape
(3, 3)

Conventions shared by every rule:

- ``experts``: a list or tuple of N pytrees (or N arrays: one tensor of N checkpoints), or one
  pytree stacked by ``soup.stack_experts`` (leaves (N, ...)), which is what ``soup.sweep``
  passes. As in ``soup.sweep``, a list or tuple is read as N experts.
- ``weights``: λ of shape (N,) on the simplex, the user's preference over the rewards. Every
  rule reduces to the λ-weighted linear soup Σᵢ λᵢθᵢ = θ₀ + Σᵢ λᵢτᵢ (τᵢ = θᵢ − θ₀) when its
  own parameters are neutral (``scale=1``, ``drop_probability=0``, equal Fishers; TIES at
  ``density=1`` only where the λ-weighted τᵢ agree in sign, since its sign election still drops
  the minority), and every rule but SLERP gives θ₀ + τᵢ at the vertex λ = eᵢ.
- ``base``: θ₀, a pytree like one expert.
- dtypes: sums are accumulated in at least float32, and each leaf comes back in the experts'
  dtype (bfloat16 experts give a bfloat16 soup).
- NumPy or JAX arrays in, JAX arrays out. Concrete λ and parameters are checked (one-line
  ``ValueError``); traced λ (inside ``jit``) are checked for shape only.

The rules, and where they stand against mergekit (``mergekit/merge_methods/
generalized_task_arithmetic.py``) and PEFT (``peft/utils/merge_utils.py``):

- ``linear``: Σᵢ λᵢθᵢ (``soup.interpolate_stacked``).
- ``task_arithmetic``: θ₀ + α Σᵢ λᵢτᵢ; mergekit's ``task_arithmetic`` with ``weight: λᵢ`` and
  ``normalize: false``, PEFT's ``task_arithmetic``.
- ``ties``: trim each τᵢ to its top ``density`` fraction of entries by magnitude (per leaf),
  elect a sign per entry as the sign of Σᵢ λᵢτ̂ᵢ (≥ 0 elects +), keep the λ-weighted trimmed
  entries that agree with it: θ₀ + α Σᵢ λᵢ τ̂ᵢ [sign τ̂ᵢ = elected]. This is mergekit's
  ``ties`` with ``weight: λᵢ`` and ``normalize: false``. mergekit's default
  ``normalize: true`` divides by Σᵢ λᵢ over agreeing experts and PEFT divides by their
  count; either would make an entry that one expert alone moves jump to its full τᵢ whatever
  λ (normalize) or shrink the vertices by the number of agreeing experts (count), so λ
  would stop being the preference the soup follows. PEFT elects on the unweighted τ̂ᵢ, which
  lets an expert with λᵢ = 0 veto the others. The trim keeps every entry whose magnitude
  equals the k-th largest (k = max(1, ⌊density · size⌋)), where mergekit and PEFT keep
  exactly k entries by index.
- ``dare``: drop each entry of each τᵢ with probability p, rescale the kept ones by 1/(1 − p)
  (an unbiased τᵢ), then task arithmetic: PEFT's ``dare_linear``, mergekit's ``dare_linear``
  with ``weight: λᵢ``, ``normalize: false``.
- ``slerp``: spherical interpolation of two experts, leaf by leaf, as mergekit's ``slerp``.
- ``fisher``: ``soup.fisher_merge``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax import soup

PyTree = Any
Experts = Sequence[PyTree] | PyTree
Rule = Callable[..., PyTree]

SLERP_COLINEAR = 0.9995  # |cos Ω| above which SLERP falls back to the linear soup (as mergekit)


# --------------------------------------------------------------------------- checks


def _stacked(experts: Experts) -> PyTree:
    """Experts as one pytree with leaves (N, ...)."""
    if isinstance(experts, (list, tuple)):
        return soup.stack_experts(experts)
    leading = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(experts)}
    if len(leading) != 1 or None in leading:
        raise ValueError(
            "experts must be a list of N pytrees or one pytree stacked by soup.stack_experts "
            f"(every leaf with the same leading axis N); got leading sizes {sorted(map(str, leading))}."
        )
    return experts


def _n_experts(stacked: PyTree) -> int:
    return jnp.shape(jax.tree.leaves(stacked)[0])[0]


def _lambdas(weights: Any, n_experts: int) -> jax.Array:
    return jnp.asarray(soup.check_weight_vector(weights, n_experts), jnp.float32)


def _check_base(base: PyTree, stacked: PyTree) -> None:
    """θ₀ must have one expert's structure and shapes."""
    expert_paths, expert_leaves = soup._leaf_paths(stacked)
    base_paths, base_leaves = soup._leaf_paths(base)
    if base_paths != expert_paths:
        raise ValueError(
            f"base must have the structure of one expert: base has leaves {base_paths[:4]}..., "
            f"the experts {expert_paths[:4]}..."
        )
    for path, base_leaf, expert_leaf in zip(base_paths, base_leaves, expert_leaves):
        if tuple(jnp.shape(base_leaf)) != tuple(jnp.shape(expert_leaf))[1:]:
            raise ValueError(
                f"base leaf {path} has shape {tuple(jnp.shape(base_leaf))}, the experts' "
                f"{tuple(jnp.shape(expert_leaf))[1:]}."
            )


def _check_fraction(value: float, name: str, *, low_open: bool, high_open: bool) -> float:
    try:
        number = float(value)
    except (TypeError, jax.errors.ConcretizationTypeError) as error:
        raise ValueError(f"{name} must be a Python number (it sets shapes); got {value!r}.") from error
    above_low = number > 0 if low_open else number >= 0
    below_high = number < 1 if high_open else number <= 1
    if not (above_low and below_high):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}; got {value!r}.")
    return number


def _check_scale(scale: float) -> None:
    if not np.isfinite(scale):
        raise ValueError(f"scale must be finite; got {scale!r}.")


def _task_vectors_rule(
    experts: Experts,
    weights: Any,
    base: PyTree,
    scale: float,
    combine: Callable[[int, jax.Array, jax.Array], jax.Array],
) -> PyTree:
    """θ₀ + α · combine(leaf index, τ (N, ...) float32, λ (N,)), leaf by leaf, in the experts' dtype."""
    _check_scale(scale)
    stacked = _stacked(experts)
    lambdas = _lambdas(weights, _n_experts(stacked))
    _check_base(base, stacked)
    stacked_leaves, treedef = jax.tree.flatten(stacked)
    merged = []
    for index, (leaf, base_leaf) in enumerate(zip(stacked_leaves, jax.tree.leaves(base))):
        leaf = jnp.asarray(leaf)
        compute_dtype = soup._accumulation_dtype(leaf.dtype)
        theta0 = jnp.asarray(base_leaf).astype(compute_dtype)
        task_vectors = leaf.astype(compute_dtype) - theta0[None]
        delta = combine(index, task_vectors, lambdas.astype(compute_dtype))
        merged.append((theta0 + scale * delta).astype(leaf.dtype))
    return jax.tree.unflatten(treedef, merged)


def _weighted_sum(task_vectors: jax.Array, lambdas: jax.Array) -> jax.Array:
    """Σᵢ λᵢ τᵢ of (N, ...) task vectors: one contraction over N.

    A dot, not a broadcast product summed over axis 0: inside a ``soup.sweep`` over λ of a
    5M-parameter model the latter made task arithmetic cost 4.1× the evaluations instead of 0.85×
    (``benchmarks/merge_rules.py``, XLA:CPU, jax 0.10.2).
    """
    return jnp.tensordot(lambdas, task_vectors, axes=1)


# --------------------------------------------------------------------------- rules


def linear(experts: Experts, weights: Any, *, base: PyTree | None = None) -> PyTree:
    """The rewarded soup Σᵢ λᵢθᵢ.

    Args:
      experts: N experts (see the module docstring).
      weights: (N,) λ on the simplex.
      base: accepted for the rules' common call shape and unused: with Σᵢ λᵢ = 1 the soup does
        not depend on θ₀.
    """
    del base
    stacked = _stacked(experts)
    return soup.interpolate_stacked(stacked, _lambdas(weights, _n_experts(stacked)))


def task_arithmetic(experts: Experts, weights: Any, *, base: PyTree, scale: float = 1.0) -> PyTree:
    """θ₀ + α Σᵢ λᵢτᵢ with task vectors τᵢ = θᵢ − θ₀ (Ilharco et al., 2023).

    ``scale`` α = 1 gives the linear soup; α > 1 extrapolates along the λ-weighted task vector.
    """
    return _task_vectors_rule(experts, weights, base, scale, lambda _, tau, lam: _weighted_sum(tau, lam))


def trim(task_vectors: jax.Array, density: float) -> jax.Array:
    """Zeros all but the ``density`` fraction of largest-magnitude entries of each τᵢ.

    Args:
      task_vectors: (N, ...) one leaf of N task vectors, float32 or float64.
      density: fraction in (0, 1] of entries kept per task vector: the k = max(1, ⌊density ·
        size⌋) largest magnitudes, and every entry tied with the k-th.

    Returns:
      (N, ...) like ``task_vectors``.
    """
    size = int(np.prod(task_vectors.shape[1:], dtype=np.int64))
    k = max(1, int(density * size))
    if k >= size:
        return task_vectors
    magnitudes = jnp.abs(task_vectors).reshape(task_vectors.shape[0], size)
    kth_largest = _kth_largest(magnitudes, k)
    keep = magnitudes >= kth_largest[:, None]
    return jnp.where(keep.reshape(task_vectors.shape), task_vectors, 0)


def _kth_largest(magnitudes: jax.Array, k: int) -> jax.Array:
    """(N,) the k-th largest entry of each row of non-negative, non-NaN floats (N, M).

    Non-negative IEEE floats order like their bit patterns read as integers, so a bisection on
    the integer t with "at least k entries ≥ t" finds the k-th largest bit pattern exactly in
    (bits − 1) passes over the row, each a compare and a count. On CPU this is ~17× faster than
    ``jax.lax.top_k`` or a sort for k = 20 % of a GPT-2-shaped model (benchmarks/merge_rules.py).
    """
    bits_dtype = jnp.int64 if magnitudes.dtype == jnp.float64 else jnp.int32
    bits = jax.lax.bitcast_convert_type(magnitudes, bits_dtype)
    infinity = jax.lax.bitcast_convert_type(jnp.array(jnp.inf, magnitudes.dtype), bits_dtype)
    low = jnp.zeros(magnitudes.shape[:1], bits_dtype)  # always has >= k entries at or above it
    high = jnp.full(magnitudes.shape[:1], infinity, bits_dtype)

    def halve(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bounds
        middle = low + (high - low + 1) // 2
        enough = (bits >= middle[:, None]).sum(axis=1) >= k
        return jnp.where(enough, middle, low), jnp.where(enough, high, middle - 1)

    n_passes = 8 * jnp.dtype(bits_dtype).itemsize - 1
    low, _ = jax.lax.fori_loop(0, n_passes, halve, (low, high))
    return jax.lax.bitcast_convert_type(low, magnitudes.dtype)


def ties(experts: Experts, weights: Any, *, base: PyTree, density: float = 0.2, scale: float = 1.0) -> PyTree:
    """TIES merging (Yadav et al., 2023): trim, elect a sign, keep the agreeing λ-weighted entries.

    θ = θ₀ + α Σᵢ λᵢ τ̂ᵢ [sign τ̂ᵢ = s], τ̂ᵢ = ``trim(τᵢ, density)``, s = sign(Σᵢ λᵢ τ̂ᵢ) with
    s = + where the sum is 0. The module docstring says where this matches mergekit and PEFT.
    The trim does not depend on λ: in a ``soup.sweep`` with ``map`` or ``chunked`` XLA hoists
    it out of the loop over λ (one trim per sweep; checked on the compiled CPU program), with
    ``vmap`` it is not batched, and with ``loop`` it runs again at every point.

    Args:
      experts: N experts.
      weights: (N,) λ on the simplex: weights both the sign election and the sum.
      base: θ₀.
      density: fraction in (0, 1] of each task vector's entries kept, per leaf; a Python number
        (it sets top-k's k). 1 keeps them all.
      scale: α.
    """
    density = _check_fraction(density, "density", low_open=True, high_open=False)

    def combine(_: int, task_vectors: jax.Array, lambdas: jax.Array) -> jax.Array:
        trimmed = trim(task_vectors, density)
        elected = jnp.where(_weighted_sum(trimmed, lambdas) >= 0, 1.0, -1.0).astype(trimmed.dtype)
        signs = jnp.sign(lambdas).reshape((-1,) + (1,) * (trimmed.ndim - 1)) * jnp.sign(trimmed)
        return _weighted_sum(jnp.where(signs == elected[None], trimmed, 0), lambdas)

    return _task_vectors_rule(experts, weights, base, scale, combine)


def dare(
    experts: Experts,
    weights: Any,
    *,
    base: PyTree,
    drop_probability: float,
    key: jax.Array,
    scale: float = 1.0,
) -> PyTree:
    """DARE (Yu et al., 2024): drop τ entries at random, rescale the rest, then task arithmetic.

    θ = θ₀ + α Σᵢ λᵢ mᵢ ⊙ τᵢ / (1 − p), mᵢ ~ Bernoulli(1 − p) per entry, so E[θ] is task
    arithmetic. The masks depend on ``key`` and the leaf's position only (``fold_in(key, leaf
    index)``), not on λ: a sweep over λ sees one set of masks. Merging tensor by tensor (one
    leaf per call), fold the tensor's index into ``key`` so the tensors get different masks.

    Args:
      experts: N experts.
      weights: (N,) λ on the simplex.
      base: θ₀.
      drop_probability: p in [0, 1), a Python number.
      key: a ``jax.random`` key.
      scale: α.
    """
    p = _check_fraction(drop_probability, "drop_probability", low_open=False, high_open=True)

    def combine(index: int, task_vectors: jax.Array, lambdas: jax.Array) -> jax.Array:
        if p == 0:
            return _weighted_sum(task_vectors, lambdas)
        keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - p, task_vectors.shape)
        rescaled = jnp.where(keep, task_vectors / (1.0 - p), 0)
        return _weighted_sum(rescaled, lambdas)

    return _task_vectors_rule(experts, weights, base, scale, combine)


def slerp(experts: Experts, weights: Any) -> PyTree:
    """Spherical linear interpolation of N = 2 experts, leaf by leaf (Shoemake, 1985).

    With λ = (1 − t, t) and Ω the angle between the two flattened leaves a and b,
    θ = sin((1 − t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b; where |cos Ω| > ``SLERP_COLINEAR`` or a
    leaf is zero, the linear soup (1 − t)a + tb. The vertices are the experts.
    """
    stacked = _stacked(experts)
    if _n_experts(stacked) != 2:
        raise ValueError(f"slerp interpolates exactly 2 experts; got {_n_experts(stacked)}.")
    t = _lambdas(weights, 2)[1]

    def merge_leaf(leaf: jax.Array) -> jax.Array:
        leaf = jnp.asarray(leaf)
        compute_dtype = soup._accumulation_dtype(leaf.dtype)
        first, second = leaf[0].astype(compute_dtype), leaf[1].astype(compute_dtype)
        norms = jnp.linalg.norm(first) * jnp.linalg.norm(second)
        cosine = jnp.sum(first * second) / jnp.where(norms > 0, norms, 1.0)
        nearly_linear = (norms == 0) | (jnp.abs(cosine) > SLERP_COLINEAR)
        omega = jnp.arccos(jnp.clip(cosine, -1.0, 1.0))
        sin_omega = jnp.where(nearly_linear, 1.0, jnp.sin(omega))
        t_c = t.astype(compute_dtype)
        first_weight = jnp.where(nearly_linear, 1.0 - t_c, jnp.sin((1.0 - t_c) * omega) / sin_omega)
        second_weight = jnp.where(nearly_linear, t_c, jnp.sin(t_c * omega) / sin_omega)
        return (first_weight * first + second_weight * second).astype(leaf.dtype)

    return jax.tree.map(merge_leaf, stacked)


def fisher(experts: Experts, weights: Any, *, fishers: Experts, floor: float = 1e-8) -> PyTree:
    """Fisher-weighted soup Σᵢ λᵢFᵢθᵢ / Σᵢ λᵢFᵢ per parameter (``soup.fisher_merge``).

    Args:
      experts: N experts.
      weights: (N,) λ on the simplex.
      fishers: N diagonal Fishers like the experts (a list, or stacked like the experts).
      floor: lower bound of every Fisher entry, > 0.
    """
    stacked, stacked_fishers = _stacked(experts), _stacked(fishers)
    if isinstance(experts, (list, tuple)) and isinstance(fishers, (list, tuple)):
        soup.check_compatible(list(experts) + list(fishers))
    lambdas = _lambdas(weights, _n_experts(stacked))
    if _n_experts(stacked_fishers) != len(lambdas):
        raise ValueError(f"Got {len(lambdas)} experts but {_n_experts(stacked_fishers)} Fishers.")
    return soup.fisher_merge_stacked(stacked, stacked_fishers, lambdas, floor=floor)


RULES: dict[str, Rule] = {
    "linear": linear,
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "dare": dare,
    "slerp": slerp,
    "fisher": fisher,
}
