"""LoRA as a pytree transform over Flax params: no module is rewritten.

``init_lora`` returns a small pytree ``{module path: {"lora_a", "lora_b"}}`` for every 2-D
(or stacked, ``(..., d_in, d_out)``) ``kernel`` whose module name matches a target;
``apply_lora`` merges it into the base params, ``W + (alpha / rank) · A @ B``, and the merged
params run through the unchanged model. Train the LoRA pytree only and pass the base
separately (closed over, never differentiated): the frozen reference policy of RLHF is the
base itself, so it costs no memory beyond the one copy of the base.

Kernel layouts. Flax ``nn.Dense`` kernels are ``(d_in, d_out)`` (LLaMA, Mistral, Gemma,
GPT-Neo, GPT-J, OPT: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``/``out_proj``,
``gate_proj``, ``up_proj``, ``down_proj``, ``fc1``, ``fc2``). transformers' Flax GPT-2 stores
its ``Conv1D`` kernels transposed, ``(d_out, d_in)`` (``c_attn``: fused q/k/v, ``c_proj``,
``c_fc``, ``q_attn``); modules listed in ``LoraConfig.out_in_modules`` are handled in that
layout, so ``A`` always maps the module's input (``A: (..., d_in, r)``, ``B: (..., r, d_out)``).
For GPT-2 target ``("c_attn",)`` (what PEFT does) or ``("c_attn", "attn.c_proj")``; a target
with dots matches the end of the module path (``attn.c_proj`` is not the MLP's ``c_proj``).

Dropout. LoRA's dropout acts on the input ``x`` of the low-rank branch, ``B·A·dropout(x)``,
with an independent mask per token; a weight merge cannot express a per-token mask. With a
``dropout_key``, ``apply_lora`` instead drops input features of ``A`` (rows of ``A``, rescaled
by 1/(1-p)), i.e. input dropout with one mask shared by every token of the forward pass
(one mask per module per key). Pass a fresh key per minibatch; pass none at evaluation.

Cost: inside a jitted step the merge materializes one merged copy of each targeted kernel
(W + ΔW; e.g. a third of a LLaMA's weights for q/k/v/o), instead of computing ``x·W + x·A·B``
which would need module rewriting. Gradients flow through the merge to A and B only.

Soups of LoRA experts: ``interpolate_lora`` (see its docstring for "factors" vs "delta").

>>> import jax, jax.numpy as jnp
>>> base = {"attn": {"q_proj": {"kernel": jnp.ones((4, 4))}, "norm": {"scale": jnp.ones(4)}}}
>>> config = LoraConfig(rank=2, alpha=4.0, target_modules=("q_proj",))
>>> lora = init_lora(base, config, jax.random.key(0))
>>> jax.tree.map(jnp.shape, lora)
{'attn': {'q_proj': {'lora_a': (4, 2), 'lora_b': (2, 4)}}}
>>> bool((apply_lora(base, lora, config)["attn"]["q_proj"]["kernel"] == 1.0).all())  # B = 0 at init
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax import soup

PyTree = Any
LORA_A, LORA_B = "lora_a", "lora_b"
GPT2_CONV1D_MODULES = ("c_attn", "c_proj", "c_fc", "q_attn")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """LoRA hyper-parameters.

    Attributes:
      rank: r, the rank of each update ΔW = A·B.
      alpha: scale numerator; ΔW is multiplied by alpha / rank.
      dropout: probability of dropping an input feature of the low-rank branch (see the
        module docstring for how a weight merge approximates LoRA dropout).
      target_modules: module names (or dotted path suffixes, e.g. ``"attn.c_proj"``) whose
        ``kernel`` gets a LoRA update.
      out_in_modules: module names whose kernel is stored ``(d_out, d_in)`` (transformers'
        Flax GPT-2 ``Conv1D``); every other kernel is Flax's ``(d_in, d_out)``.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    out_in_modules: tuple[str, ...] = GPT2_CONV1D_MODULES

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be an int >= 1, got {self.rank!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}.")
        if isinstance(self.target_modules, str) or not self.target_modules:
            raise ValueError(
                f"target_modules must be a non-empty tuple of names, got {self.target_modules!r}."
            )
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "out_in_modules", tuple(self.out_in_modules))

    @property
    def scale(self) -> float:
        """alpha / rank, the factor applied to A·B."""
        return self.alpha / self.rank


# --------------------------------------------------------------------------- paths


def _key_name(entry: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _named_leaves(tree: PyTree) -> list[tuple[tuple[str, ...], Any]]:
    return [
        (tuple(_key_name(entry) for entry in path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def _matches(module_path: tuple[str, ...], target: str) -> bool:
    suffix = tuple(target.split("."))
    return module_path[-len(suffix) :] == suffix


def _target_kernels(params: PyTree, config: LoraConfig) -> dict[tuple[str, ...], Any]:
    """{module path: kernel} for every kernel of a targeted module."""
    kernels = {path[:-1]: leaf for path, leaf in _named_leaves(params) if path and path[-1] == "kernel"}
    targeted = {
        path: kernel
        for path, kernel in kernels.items()
        if path and any(_matches(path, target) for target in config.target_modules)
    }
    if not targeted:
        available = sorted({path[-1] for path in kernels if path})
        raise ValueError(
            f"No kernel matches target_modules={list(config.target_modules)}. Module names with a "
            f"kernel in these params: {available}."
        )
    for path, kernel in targeted.items():
        if jnp.ndim(kernel) < 2:
            raise ValueError(f"Module {'/'.join(path)} has a {jnp.ndim(kernel)}-D kernel; LoRA needs >= 2-D.")
    return targeted


def _is_out_in(module_path: tuple[str, ...], config: LoraConfig) -> bool:
    return module_path[-1] in config.out_in_modules


def _in_out_dims(kernel_shape: tuple[int, ...], out_in: bool) -> tuple[int, int]:
    d0, d1 = kernel_shape[-2:]
    return (d1, d0) if out_in else (d0, d1)


def _nest(flat: dict[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


def _lora_modules(lora_params: PyTree) -> dict[tuple[str, ...], dict[str, Any]]:
    modules: dict[tuple[str, ...], dict[str, Any]] = {}
    for path, leaf in _named_leaves(lora_params):
        if not path or path[-1] not in (LORA_A, LORA_B):
            raise ValueError(
                f"LoRA params leaf {'/'.join(path)} is not a {LORA_A!r}/{LORA_B!r} factor; pass the "
                "pytree returned by init_lora."
            )
        modules.setdefault(path[:-1], {})[path[-1]] = leaf
    for path, factors in modules.items():
        if set(factors) != {LORA_A, LORA_B}:
            raise ValueError(f"LoRA module {'/'.join(path)} needs both {LORA_A!r} and {LORA_B!r}.")
    return modules


# --------------------------------------------------------------------------- init / apply


def init_lora(params: PyTree, config: LoraConfig, key: jax.Array) -> dict:
    """Creates zero-effect LoRA factors for every targeted kernel.

    ``A`` is drawn like PEFT's ``kaiming_uniform_(a=√5)``, U(-1/√d_in, 1/√d_in); ``B`` is 0,
    so ``apply_lora`` returns the base params exactly until ``B`` is trained.

    Args:
      params: base params (any pytree of dicts, e.g. a transformers Flax model's params).
      config: the LoRA config.
      key: PRNG key.

    Returns:
      ``{...module path...: {"lora_a": (..., d_in, r), "lora_b": (..., r, d_out)}}`` in
      float32, mirroring the module paths of ``params``.

    Raises:
      ValueError: if no kernel matches ``config.target_modules`` (naming the available modules).
    """
    targeted = _target_kernels(params, config)
    keys = jax.random.split(key, len(targeted))
    flat = {}
    for module_key, (path, kernel) in zip(keys, targeted.items()):
        shape = tuple(jnp.shape(kernel))
        d_in, d_out = _in_out_dims(shape, _is_out_in(path, config))
        bound = 1.0 / math.sqrt(d_in)
        flat[(*path, LORA_A)] = jax.random.uniform(
            module_key, (*shape[:-2], d_in, config.rank), jnp.float32, -bound, bound
        )
        flat[(*path, LORA_B)] = jnp.zeros((*shape[:-2], config.rank, d_out), jnp.float32)
    return _nest(flat)


def lora_delta(lora_a: jax.Array, lora_b: jax.Array, scale: float, *, out_in: bool = False) -> jax.Array:
    """ΔW = scale · A @ B in the kernel's layout ((d_in, d_out), or (d_out, d_in) if ``out_in``)."""
    delta = scale * jnp.matmul(lora_a, lora_b, precision=jax.lax.Precision.HIGHEST)
    return jnp.swapaxes(delta, -1, -2) if out_in else delta


def apply_lora(
    base_params: PyTree, lora_params: PyTree, config: LoraConfig, *, dropout_key: jax.Array | None = None
) -> PyTree:
    """Merges LoRA factors into the base: W + (alpha/rank)·A@B on every LoRA'd kernel.

    Differentiable in ``lora_params``; leaves without LoRA are the base's own arrays (no copy).
    The sum is computed in at least float32 and cast back to the kernel's dtype.

    Args:
      base_params: base params (not modified).
      lora_params: from ``init_lora`` (or ``interpolate_lora``; any rank).
      config: the config the factors were made with (its ``alpha / rank`` is the scale).
      dropout_key: if given and ``config.dropout > 0``, drop input features of each ``A``
        (the approximation of LoRA dropout described in the module docstring).

    Returns:
      Params with the structure and dtypes of ``base_params``.

    Raises:
      ValueError: if a LoRA module has no kernel in the base or factor shapes do not fit it.
    """
    modules = _lora_modules(lora_params)
    order = {path: index for index, path in enumerate(sorted(modules))}
    found: set[tuple[str, ...]] = set()

    def merge(path_entries, leaf):
        path = tuple(_key_name(entry) for entry in path_entries)
        module = path[:-1]
        if not path or path[-1] != "kernel" or module not in modules:
            return leaf
        found.add(module)
        lora_a, lora_b = modules[module][LORA_A], modules[module][LORA_B]
        out_in = _is_out_in(module, config)
        d_in, d_out = _in_out_dims(tuple(jnp.shape(leaf)), out_in)
        batch = tuple(jnp.shape(leaf))[:-2]
        if (
            lora_a.shape[:-2] != batch
            or lora_b.shape[:-2] != batch
            or lora_a.shape[-2] != d_in
            or lora_b.shape[-1] != d_out
            or lora_a.shape[-1] != lora_b.shape[-2]
        ):
            raise ValueError(
                f"LoRA factors of {'/'.join(module)} have shapes A {lora_a.shape}, B {lora_b.shape}; "
                f"the kernel {jnp.shape(leaf)} needs A (..., {d_in}, r) and B (..., r, {d_out})."
            )
        if dropout_key is not None and config.dropout > 0.0:
            keep = jax.random.bernoulli(
                jax.random.fold_in(dropout_key, order[module]), 1.0 - config.dropout, (*batch, d_in, 1)
            )
            lora_a = jnp.where(keep, lora_a / (1.0 - config.dropout), 0.0)
        compute_dtype = jnp.promote_types(leaf.dtype, jnp.float32)
        delta = lora_delta(
            lora_a.astype(compute_dtype), lora_b.astype(compute_dtype), config.scale, out_in=out_in
        )
        return (leaf.astype(compute_dtype) + delta).astype(leaf.dtype)

    merged = jax.tree_util.tree_map_with_path(merge, base_params)
    missing = sorted(set(modules) - found)
    if missing:
        raise ValueError(
            f"LoRA modules {['/'.join(path) for path in missing]} have no kernel in the base params; "
            "the LoRA params were made for another model."
        )
    return merged


# --------------------------------------------------------------------------- counting


def lora_param_count(lora_params: PyTree) -> int:
    """Number of trainable LoRA parameters."""
    return int(sum(np.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(lora_params)))


def trainable_fraction(lora_params: PyTree, base_params: PyTree) -> float:
    """LoRA parameters / base parameters (e.g. ~0.001–0.01 for attention LoRA on an LLM)."""
    base = sum(np.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(base_params))
    if base == 0:
        raise ValueError("base_params has no parameters.")
    return lora_param_count(lora_params) / float(base)


# --------------------------------------------------------------------------- soups


def interpolate_lora(
    experts: Sequence[PyTree],
    lambdas: Any,
    config: LoraConfig,
    *,
    mode: Literal["factors", "delta"] = "delta",
    allow_extrapolation: bool = False,
) -> dict:
    """A soup of LoRA experts trained from one base, as LoRA params to pass to ``apply_lora``.

    * ``"delta"`` (exact): interpolates the updates ΔWᵢ = s·AᵢBᵢ by concatenating ranks,
      ``A = [λ₁A₁ | … | λₙAₙ]`` (rank axis) and ``B = [B₁; …; Bₙ]``, so A·B = Σᵢ λᵢAᵢBᵢ and
      ``apply_lora(base, soup, config)`` = Σᵢ λᵢ ``apply_lora(base, expertᵢ, config)`` (λ sums
      to 1). The result has rank N·r; apply it with the same ``config`` (the scale stays
      alpha / r, the experts' own).
    * ``"factors"``: averages A and B separately with ``rs_jax.soup.interpolate`` (what the
      original rewarded-soups code did by averaging PEFT adapters). Rank r, but
      (ΣλᵢAᵢ)(ΣλᵢBᵢ) ≠ ΣλᵢAᵢBᵢ in general; it is exact only at the vertices.

    Args:
      experts: N LoRA pytrees from ``init_lora`` with one config (same structure and shapes).
      lambdas: (N,) λ on the simplex.
      config: the experts' LoRA config.
      mode: "delta" or "factors".
      allow_extrapolation: permit λ outside [0, 1] (rows still sum to 1).

    Raises:
      ValueError: on incompatible experts, invalid λ or an unknown mode.
    """
    if mode not in ("factors", "delta"):
        raise ValueError(f"mode must be 'factors' or 'delta', got {mode!r}.")
    soup.check_compatible(experts)
    modules = [_lora_modules(expert) for expert in experts]
    for path, factors in modules[0].items():
        if factors[LORA_A].shape[-1] != config.rank:
            raise ValueError(
                f"LoRA module {'/'.join(path)} has rank {factors[LORA_A].shape[-1]}, the config says "
                f"{config.rank}; interpolate experts made with this config."
            )
    if mode == "factors":
        return soup.interpolate(experts, lambdas, allow_extrapolation=allow_extrapolation)
    weights = jnp.asarray(soup.check_weights(lambdas, len(experts), allow_extrapolation=allow_extrapolation))
    flat = {}
    for path in modules[0]:
        lora_a, lora_b = concatenate_ranks(
            [m[path][LORA_A] for m in modules], [m[path][LORA_B] for m in modules], weights
        )
        dtype = modules[0][path][LORA_A].dtype
        flat[(*path, LORA_A)] = lora_a.astype(dtype)
        flat[(*path, LORA_B)] = lora_b.astype(dtype)
    return _nest(flat)


def interpolate_stacked_lora(
    stacked_experts: PyTree, lambdas: jax.Array, config: LoraConfig, mode: Literal["factors", "delta"]
) -> dict:
    """``interpolate_lora`` of N experts stacked along a leading axis (``soup.stack_experts``);
    jit-able with traced λ (N from the stack), the merge rule of a LoRA sweep. λ may extrapolate."""
    experts = [jax.tree.map(lambda leaf, i=i: leaf[i], stacked_experts) for i in range(lambdas.shape[0])]
    return interpolate_lora(experts, lambdas, config, mode=mode, allow_extrapolation=True)


def concatenate_ranks(
    lora_as: Sequence[jax.Array], lora_bs: Sequence[jax.Array], coefficients: Any
) -> tuple[jax.Array, jax.Array]:
    """One low-rank factor pair whose product is Σᵢ cᵢ·AᵢBᵢ, exactly: ranks are concatenated.

    Args:
      lora_as: N factors ``(..., d_in, rᵢ)`` (ranks may differ).
      lora_bs: N factors ``(..., rᵢ, d_out)``.
      coefficients: (N,) cᵢ, folded into the A blocks.

    Returns:
      ``A = [c₁A₁ | … | cₙAₙ]`` of shape ``(..., d_in, Σrᵢ)`` and ``B = [B₁; …; Bₙ]`` of shape
      ``(..., Σrᵢ, d_out)``, in float32 (float64 for float64 factors).
    """
    dtype = jnp.promote_types(jnp.result_type(*lora_as, *lora_bs), jnp.float32)
    coefficients = jnp.asarray(coefficients, dtype)
    a_blocks = [c * jnp.asarray(a, dtype) for c, a in zip(coefficients, lora_as)]
    b_blocks = [jnp.asarray(b, dtype) for b in lora_bs]
    return jnp.concatenate(a_blocks, axis=-1), jnp.concatenate(b_blocks, axis=-2)
