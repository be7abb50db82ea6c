"""Merge PEFT LoRA adapters of one base model: into the base weights, or into one adapter.

An adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` with,
per adapted module ``M`` (a ``torch.nn.Linear`` of the base, weight ``M.weight`` of shape
``(d_out, d_in)``, or ``(d_in, d_out)`` with ``fan_in_fan_out``), the factors
``base_model.model.M.lora_A.weight`` ``(r, d_in)`` and ``base_model.model.M.lora_B.weight``
``(d_out, r)``; PEFT adds ``s·B·A`` to the weight, ``s = lora_alpha / r`` (``lora_alpha / √r``
with ``use_rslora``).

Modes (``lora_mode``), with ``rs_jax.models.lora``'s math:

* ``delta`` (exact): ΔW = Σᵢ cᵢ·sᵢ·BᵢAᵢ with cᵢ = λᵢ (``linear``) or scale·λᵢ
  (``task_arithmetic``). With ``base`` the result is the base with ΔW added (a full model
  directory, streamed tensor by tensor); without, one adapter of rank Σrᵢ (A stacked, B
  concatenated, cᵢsᵢ folded into A, ``lora_alpha = r`` so PEFT's scale is 1: PEFT's
  ``add_weighted_adapter(combination_type="cat")``). A module that an adapter does not
  adapt contributes zero blocks.
* ``factors``: A = ΣλᵢAᵢ and B = ΣλᵢBᵢ separately (what the rewarded-soups code did with
  PEFT adapters); needs one rank, scale and module set; exact only at the vertices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Literal

import jax.numpy as jnp
import numpy as np

from rs_jax import hf_merge, soup
from rs_jax import safetensors_io as st
from rs_jax.models import lora

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
A_SUFFIX, B_SUFFIX = ".lora_A.weight", ".lora_B.weight"
METHODS = ("linear", "task_arithmetic")
LoraMode = Literal["delta", "factors"]


@dataclasses.dataclass(frozen=True)
class Adapter:
    """One PEFT LoRA adapter, its factors loaded (adapters are small).

    Attributes:
      directory: the adapter directory.
      config: its ``adapter_config.json``.
      factors: {module name in the base: (A ``(r, d_in)``, B ``(d_out, r)``)}.
      metadata: the safetensors ``__metadata__``.
    """

    directory: str
    config: dict
    factors: dict[str, tuple[np.ndarray, np.ndarray]]
    metadata: dict[str, str]

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def scale(self) -> float:
        """PEFT's scaling: lora_alpha / r, or lora_alpha / √r with rsLoRA."""
        alpha = float(self.config.get("lora_alpha", self.rank))
        return alpha / math.sqrt(self.rank) if self.config.get("use_rslora") else alpha / self.rank

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")


def is_peft_adapter(directory: str | os.PathLike) -> bool:
    """True if ``directory`` has ``adapter_config.json`` and ``adapter_model.safetensors``."""
    return all(os.path.isfile(os.path.join(directory, name)) for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))


def read_adapter(directory: str | os.PathLike) -> Adapter:
    """Reads a PEFT LoRA adapter (plain LoRA on linear layers).

    Raises:
      ValueError: not a LoRA adapter, or one with parts a weight merge cannot express here
        (DoRA, rank/alpha patterns, LoRA biases, embedding LoRA, ``modules_to_save``).
    """
    where = os.fspath(directory)
    if not is_peft_adapter(where):
        raise ValueError(f"{where} is not a PEFT adapter (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}).")
    with open(os.path.join(where, ADAPTER_CONFIG)) as handle:
        config = json.load(handle)
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{where} is a {config['peft_type']} adapter; only LoRA adapters merge.")
    for key in ("use_dora", "rank_pattern", "alpha_pattern", "layer_replication"):
        if config.get(key):
            raise ValueError(f"{where} sets {key}, which this merge does not support.")
    layout = st.read_layout(where, ADAPTER_WEIGHTS)
    halves: dict[str, dict[str, np.ndarray]] = {}
    with st.TensorReader(layout) as reader:
        for name in layout.tensors:
            suffix = next((s for s in (A_SUFFIX, B_SUFFIX) if name.endswith(s)), None)
            if not name.startswith(PREFIX) or suffix is None:
                raise ValueError(
                    f"{where}: tensor {name} is not a LoRA factor {PREFIX}<module>{A_SUFFIX}/{B_SUFFIX} "
                    "(embedding LoRA, biases and modules_to_save are not merged)."
                )
            halves.setdefault(name[len(PREFIX) : -len(suffix)], {})[suffix] = reader.read(name)
    factors = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {A_SUFFIX, B_SUFFIX}:
            raise ValueError(f"{where}: module {module} lacks its lora_A or lora_B factor.")
        a, b = pair[A_SUFFIX], pair[B_SUFFIX]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != int(config["r"]) or b.shape[1] != int(config["r"]):
            raise ValueError(
                f"{where}: module {module} has A {a.shape} and B {b.shape}; r = {config['r']} needs "
                "A (r, d_in) and B (d_out, r)."
            )
        factors[module] = (a, b)
    if not factors:
        raise ValueError(f"{where}: {ADAPTER_WEIGHTS} holds no LoRA factors.")
    return Adapter(where, config, factors, layout.metadata)


def _check_mergeable(adapters: Sequence[Adapter], mode: LoraMode) -> None:
    first = adapters[0]
    for adapter in adapters[1:]:
        if adapter.base_model != first.base_model:
            raise ValueError(
                f"Adapters of different bases: {first.directory} is for {first.base_model!r}, "
                f"{adapter.directory} for {adapter.base_model!r}."
            )
        if bool(adapter.config.get("fan_in_fan_out")) != bool(first.config.get("fan_in_fan_out")):
            raise ValueError(f"{adapter.directory} and {first.directory} differ in fan_in_fan_out.")
        for module in adapter.factors.keys() & first.factors.keys():
            (a, b), (a0, b0) = adapter.factors[module], first.factors[module]
            if (a.shape[1], b.shape[0]) != (a0.shape[1], b0.shape[0]):
                raise ValueError(
                    f"Module {module} maps {a.shape[1]} -> {b.shape[0]} in {adapter.directory} but "
                    f"{a0.shape[1]} -> {b0.shape[0]} in {first.directory}."
                )
        if mode == "factors":
            if adapter.factors.keys() != first.factors.keys():
                raise ValueError(
                    f"--lora-mode factors needs one set of target modules; {adapter.directory} and "
                    f"{first.directory} adapt different modules (--lora-mode delta merges them)."
                )
            if (adapter.rank, adapter.scale) != (first.rank, first.scale):
                raise ValueError(
                    f"--lora-mode factors needs one rank and scale; {adapter.directory} has "
                    f"r={adapter.rank}, s={adapter.scale:g}, {first.directory} "
                    f"r={first.rank}, s={first.scale:g} "
                    "(--lora-mode delta merges them)."
                )


def soup_factors(
    adapters: Sequence[Adapter], coefficients: np.ndarray, mode: LoraMode
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """The merged factors in ``rs_jax.models.lora``'s layout, and the scale to apply them with.

    Returns:
      ({module: (a ``(d_in, R)``, b ``(R, d_out)``)} in float32, s) with ΔW = s·(a·b)ᵀ in
      PEFT's ``(d_out, d_in)``: for ``delta`` R = Σrᵢ and s = 1 (cᵢsᵢ folded into a);
      for ``factors`` R = r, a = ΣcᵢAᵢᵀ, b = ΣcᵢBᵢᵀ and s the adapters' scale.
    """
    modules = sorted(set().union(*(adapter.factors for adapter in adapters)))
    if mode == "factors":
        averaged = soup.interpolate(
            [
                {m: (a.T.astype(np.float32), b.T.astype(np.float32)) for m, (a, b) in ad.factors.items()}
                for ad in adapters
            ],
            coefficients,
            allow_extrapolation=True,  # checked by the caller
        )
        return {m: (np.asarray(a), np.asarray(b)) for m, (a, b) in averaged.items()}, adapters[0].scale
    merged = {}
    for module in modules:
        a0, b0 = next(adapter.factors[module] for adapter in adapters if module in adapter.factors)
        lora_as, lora_bs = [], []
        for adapter in adapters:
            a, b = adapter.factors.get(
                module,
                (
                    np.zeros((adapter.rank, a0.shape[1]), a0.dtype),
                    np.zeros((b0.shape[0], adapter.rank), b0.dtype),
                ),
            )
            lora_as.append(a.T)
            lora_bs.append(b.T)
        scaled = [c * adapter.scale for c, adapter in zip(coefficients, adapters)]
        a_cat, b_cat = lora.concatenate_ranks(lora_as, lora_bs, np.asarray(scaled))
        merged[module] = (np.asarray(a_cat), np.asarray(b_cat))
    return merged, 1.0


def _merge_into_base(
    adapters: Sequence[Adapter],
    factors: dict[str, tuple[np.ndarray, np.ndarray]],
    scale: float,
    base: str,
    staging: str,
    dtype: str | None,
) -> None:
    if not hf_merge.is_safetensors_model(base):
        raise ValueError(f"--base {base} is not a model directory with config.json and {st.MODEL_WEIGHTS}.")
    layout = st.read_layout(base)
    fan_in_fan_out = bool(adapters[0].config.get("fan_in_fan_out"))
    for module, (a, b) in factors.items():
        name = module + ".weight"
        expected = (a.shape[0], b.shape[1]) if fan_in_fan_out else (b.shape[1], a.shape[0])
        if name not in layout.tensors:
            raise ValueError(f"The adapters change {name}, which {base} does not have: another base model.")
        if layout.tensors[name].shape != expected:
            raise ValueError(
                f"{base}: {name} is {layout.tensors[name].shape}, the adapters' update is {expected}."
            )
    with st.TensorReader(layout) as reader:

        def produce(name: str) -> np.ndarray:
            weight = reader.read(name)
            target = hf_merge.output_dtype(layout.tensors[name], dtype)
            module = name.removesuffix(".weight")
            if not name.endswith(".weight") or module not in factors:
                return weight.astype(target)
            a, b = factors[module]
            delta = lora.lora_delta(jnp.asarray(a), jnp.asarray(b), scale, out_in=not fan_in_fan_out)
            return np.asarray(jnp.asarray(weight, jnp.float32) + delta).astype(target)

        st.write_like(layout, staging, produce, lambda spec: hf_merge.output_dtype(spec, dtype))
    st.copy_side_files(base, staging)


def _write_adapter(
    adapters: Sequence[Adapter],
    factors: dict[str, tuple[np.ndarray, np.ndarray]],
    mode: LoraMode,
    staging: str,
    dtype: str | None,
) -> None:
    first = adapters[0]
    config = dict(first.config)
    if mode == "delta":
        rank = sum(adapter.rank for adapter in adapters)
        targets = [adapter.config.get("target_modules") for adapter in adapters]
        if all(isinstance(target, list) for target in targets):
            config["target_modules"] = sorted(set().union(*targets))
        elif any(target != targets[0] for target in targets):
            raise ValueError(
                "The adapters' target_modules differ and are not all lists; merge them into --base."
            )
        config.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={})
    a_spec = st.TensorSpec(ADAPTER_WEIGHTS, (), np.dtype(next(iter(first.factors.values()))[0].dtype))
    target = hf_merge.output_dtype(a_spec, dtype)
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[PREFIX + module + A_SUFFIX] = a.T.astype(target)
        tensors[PREFIX + module + B_SUFFIX] = b.T.astype(target)
    st.write_safetensors(
        os.path.join(staging, ADAPTER_WEIGHTS),
        {name: (array.shape, array.dtype) for name, array in tensors.items()},
        tensors.__getitem__,
        first.metadata or {"format": "pt"},
    )
    with open(os.path.join(staging, ADAPTER_CONFIG), "w") as handle:
        json.dump(config, handle, indent=2)
    st.copy_side_files(first.directory, staging, skip=(ADAPTER_CONFIG,))


def merge_adapters(
    directories: Sequence[str],
    weights: Sequence[float],
    out: str,
    *,
    base: str | None = None,
    mode: LoraMode = "delta",
    method: str = "linear",
    scale: float | None = None,
    dtype: str | None = None,
    allow_extrapolation: bool = False,
) -> str:
    """Merges PEFT LoRA adapters of one base; says what it wrote.

    Args:
      directories: N adapter directories (one ``base_model_name_or_path``).
      weights: (N,) λ; on the simplex for ``linear``.
      out: new directory (must not exist, or be empty; nothing is written there on error).
      base: the base model directory (safetensors): the output is then the full merged model;
        without it, one PEFT adapter.
      mode: ``delta`` (exact) or ``factors`` (see the module docstring).
      method: ``linear`` (ΔW = ΣλᵢΔWᵢ) or ``task_arithmetic`` (ΔW = scale·ΣλᵢΔWᵢ, any λ).
      scale: ``task_arithmetic``'s factor (default 1).
      dtype: ``float32``, ``float16`` or ``bfloat16`` for floating outputs; None keeps dtypes.
      allow_extrapolation: permit λ outside [0, 1] for ``linear``.

    Raises:
      ValueError: adapters of different bases, unmergeable modules or ranks, bad options.
    """
    if method not in METHODS:
        raise ValueError(f"PEFT adapters merge with --method {' or '.join(METHODS)}, not {method}.")
    if mode not in ("delta", "factors"):
        raise ValueError(f"--lora-mode must be delta or factors, got {mode!r}.")
    if scale is not None and method != "task_arithmetic":
        raise ValueError(f"--method {method} takes no scale.")
    if mode == "factors" and method != "linear":
        raise ValueError("--lora-mode factors averages A and B with λ on the simplex: use --method linear.")
    if dtype is not None and dtype not in hf_merge.OUTPUT_DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(hf_merge.OUTPUT_DTYPES)}, got {dtype!r}.")
    rule = hf_merge.RuleOptions(method=method, scale=scale)
    lambdas = rule.check_weights(weights, len(directories), allow_extrapolation)
    coefficients = lambdas * (1.0 if scale is None else scale)
    adapters = [read_adapter(directory) for directory in directories]
    _check_mergeable(adapters, mode)
    factors, factor_scale = soup_factors(adapters, coefficients, mode)
    with st.staged_directory(out) as staging:
        if base is None:
            _write_adapter(adapters, factors, mode, staging, dtype)
        else:
            _merge_into_base(adapters, factors, factor_scale, base, staging, dtype)
        hf_merge.write_soup_record(
            staging,
            {
                "experts": [os.path.abspath(path) for path in directories],
                "weights": lambdas.tolist(),
                "base": os.path.abspath(base) if base else None,
                "method": method,
                "scale": scale,
                "lora_mode": mode,
            },
        )
    rank = next(iter(factors.values()))[0].shape[1]
    if base is None:
        return f"PEFT LoRA adapter ({mode}, rank {rank}, {len(factors)} modules)"
    return f"Hugging Face safetensors model (base + {mode} soup of {len(adapters)} LoRA adapters)"
