"""Merge Hugging Face models in PyTorch safetensors format, tensor by tensor, with a merge rule.

No model class is built: for each tensor name of the first expert, the tensor of every
expert (and of ``base`` for the rules that take one) is read from the memory-mapped
safetensors files, combined in float32 by a rule of ``rs_jax.merge_rules``, cast back to
the tensor's dtype (bf16/fp16 stay bf16/fp16, or ``dtype``) and written. Resident memory
is therefore a few copies of the largest tensor, whatever the model size. The output has
the first expert's tensor names and shards (with ``model.safetensors.index.json`` when
sharded), its config and tokenizer files, and a ``soup.json`` saying how it was made, so
transformers, vLLM or ``rs_jax.models.hf`` load it like any checkpoint.

Floating tensors (F64/F32/F16/BF16) are merged; other tensors (integer buffers) must be
equal in every expert and are copied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax import merge_rules, soup
from rs_jax import safetensors_io as st

MERGED_DTYPES = ("F64", "F32", "F16", "BF16")
OUTPUT_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
# Rules whose weights are a point of the simplex (the rest weigh task vectors freely).
SIMPLEX_RULES = ("linear", "slerp")


@dataclasses.dataclass(frozen=True)
class RuleOptions:
    """A merge rule of ``rs_jax.merge_rules.RULES`` and its parameters.

    Attributes:
      method: the rule's name (``linear``, ``task_arithmetic``, ``ties``, ``dare``, ``slerp``).
      density: fraction of each task vector kept (``ties``); None: the rule's default.
      drop_probability: probability of dropping a task-vector entry (``dare``).
      scale: factor on the merged task vector (``task_arithmetic``, ``ties``, ``dare``).
      seed: seed of the ``dare`` masks; each tensor's key is ``tensor_key(seed, name)``.
    """

    method: str = "linear"
    density: float | None = None
    drop_probability: float | None = None
    scale: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.method not in merge_rules.RULES:
            raise ValueError(
                f"Unknown merge method {self.method!r}; choose one of {sorted(merge_rules.RULES)}."
            )
        accepted = inspect.signature(merge_rules.RULES[self.method]).parameters
        for name in ("density", "drop_probability", "scale"):
            if getattr(self, name) is not None and name not in accepted:
                raise ValueError(f"--method {self.method} takes no {name.replace('_', '-')}.")
        for name, parameter in accepted.items():
            required = (
                parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is parameter.empty
            )
            if required and name not in ("base", "key") and getattr(self, name, None) is None:
                raise ValueError(f"--method {self.method} needs --{name.replace('_', '-')}.")

    @property
    def needs_base(self) -> bool:
        """True if the rule combines task vectors θᵢ − base."""
        base = inspect.signature(merge_rules.RULES[self.method]).parameters.get("base")
        return base is not None and base.default is inspect.Parameter.empty

    def check_weights(
        self, weights: Sequence[float], n_experts: int, allow_extrapolation: bool
    ) -> np.ndarray:
        """λ on the simplex for ``linear``/``slerp``; any finite weights for task-vector rules."""
        if self.method == "slerp" and n_experts != 2:
            raise ValueError(f"--method slerp interpolates two experts, got {n_experts}.")
        if self.method in SIMPLEX_RULES:
            return soup.check_weights(weights, n_experts, allow_extrapolation=allow_extrapolation)
        array = np.asarray(weights, np.float64)
        if array.shape != (n_experts,) or not np.all(np.isfinite(array)):
            raise ValueError(f"Give {n_experts} finite weights, one per expert; got {list(weights)}.")
        return array

    def apply(self, name: str, experts: list[jax.Array], weights: np.ndarray, base: jax.Array | None):
        """Merges one tensor (float32 arrays) with the rule."""
        rule = merge_rules.RULES[self.method]
        accepted = inspect.signature(rule).parameters
        keywords = {
            key: value
            for key, value in (
                ("density", self.density),
                ("drop_probability", self.drop_probability),
                ("scale", self.scale),
            )
            if value is not None
        }
        if self.needs_base:
            keywords["base"] = base
        if "key" in accepted:
            keywords["key"] = tensor_key(self.seed, name)
        return rule(experts, [float(w) for w in weights], **keywords)


def tensor_key(seed: int, name: str) -> jax.Array:
    """The PRNG key of tensor ``name``: ``fold_in(key(seed), hash(name))``, the same in any shard."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") & 0x7FFFFFFF
    return jax.random.fold_in(jax.random.key(seed), digest)


def write_soup_record(directory: str, record: dict) -> None:
    """Writes ``soup.json``: what was merged, with which weights and rule."""
    with open(os.path.join(directory, "soup.json"), "w") as handle:
        json.dump(record, handle, indent=2)


def is_safetensors_model(directory: str | os.PathLike) -> bool:
    """True if ``directory`` has ``config.json`` and PyTorch-format safetensors weights."""
    return os.path.isfile(os.path.join(directory, "config.json")) and st.has_model_weights(directory)


def _check_matching(layouts: Sequence[st.Layout]) -> None:
    reference = layouts[0]
    for layout in layouts[1:]:
        missing = sorted(reference.tensors.keys() - layout.tensors.keys())
        extra = sorted(layout.tensors.keys() - reference.tensors.keys())
        if missing or extra:
            names = ", ".join((missing or extra)[:3])
            raise ValueError(
                f"{layout.directory} {'lacks' if missing else 'has extra'} tensors of {reference.directory} "
                f"({len(missing or extra)}, e.g. {names}): not the same architecture."
            )
        for name, spec in reference.tensors.items():
            other = layout.tensors[name]
            if other.shape != spec.shape:
                raise ValueError(
                    f"Tensor {name} is {other.shape} in {layout.directory} but {spec.shape} in "
                    f"{reference.directory}."
                )
            if (st.CODES[spec.dtype] in MERGED_DTYPES) != (st.CODES[other.dtype] in MERGED_DTYPES):
                raise ValueError(
                    f"Tensor {name} is {other.dtype} in {layout.directory} but {spec.dtype} elsewhere."
                )


def output_dtype(spec: st.TensorSpec, dtype: str | None) -> np.dtype:
    """The dtype a merged tensor is written in: ``dtype`` for floating tensors, else its own."""
    if dtype is None or st.CODES[spec.dtype] not in MERGED_DTYPES:
        return spec.dtype
    return st.DTYPES[OUTPUT_DTYPES[dtype]]


def _merge_tensor(
    name: str, arrays: list[np.ndarray], base: np.ndarray | None, rule: RuleOptions, weights: np.ndarray
) -> np.ndarray:
    """One merged tensor in float32 (float64 for float64), or the shared value of a non-float tensor."""
    if st.CODES[arrays[0].dtype] not in MERGED_DTYPES:
        for array in arrays[1:]:
            if not np.array_equal(array, arrays[0]):
                raise ValueError(f"Non-float tensor {name} ({arrays[0].dtype}) differs between experts.")
        return arrays[0]
    compute = np.promote_types(arrays[0].dtype, np.float32)
    experts = [jnp.asarray(array.astype(compute)) for array in arrays]
    base_array = None if base is None else jnp.asarray(base.astype(compute))
    return np.asarray(rule.apply(name, experts, weights, base_array))


def merge_models(
    experts: Sequence[str],
    weights: Sequence[float],
    out: str,
    *,
    rule: RuleOptions = RuleOptions(),
    base: str | None = None,
    dtype: str | None = None,
    allow_extrapolation: bool = False,
) -> str:
    """Merges HF safetensors model directories into a new one at ``out``; says what it wrote.

    Args:
      experts: N directories with ``config.json`` and ``model.safetensors`` (or shards + index),
        one architecture (same tensor names and shapes; sharding may differ).
      weights: (N,) λ (on the simplex for ``linear``/``slerp``; any finite weights otherwise).
      out: new directory (must not exist, or be empty; nothing is written there on error).
      rule: the merge rule and its parameters.
      base: the pre-trained model directory, for the rules on task vectors.
      dtype: ``float32``, ``float16`` or ``bfloat16`` for every floating tensor; None keeps
        each tensor's dtype (the first expert's).
      allow_extrapolation: permit λ outside [0, 1] for ``linear``/``slerp``.

    Raises:
      ValueError: bad weights or options, tensors that differ in name, shape or kind.
      FileNotFoundError: a missing weights file or shard.
    """
    lambdas = rule.check_weights(weights, len(experts), allow_extrapolation)
    if rule.needs_base and base is None:
        raise ValueError(f"--method {rule.method} combines task vectors θᵢ − base: give --base.")
    if base is not None and not rule.needs_base:
        raise ValueError(f"--method {rule.method} takes no --base.")
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(OUTPUT_DTYPES)}, got {dtype!r}.")
    for path in [*experts, *([base] if base else [])]:
        if not is_safetensors_model(path):
            raise ValueError(f"{path} is not a model directory with config.json and {st.MODEL_WEIGHTS}.")
    layouts = [st.read_layout(path) for path in experts]
    base_layout = st.read_layout(base) if base else None
    _check_matching([*layouts, *([base_layout] if base_layout else [])])
    reference = layouts[0]

    with st.staged_directory(out) as staging, contextlib.ExitStack() as stack:
        readers = [stack.enter_context(st.TensorReader(layout)) for layout in layouts]
        base_reader = stack.enter_context(st.TensorReader(base_layout)) if base_layout else None

        def produce(name: str) -> np.ndarray:
            arrays = [reader.read(name) for reader in readers]
            base_array = base_reader.read(name) if base_reader else None
            merged = _merge_tensor(name, arrays, base_array, rule, lambdas)
            return merged.astype(output_dtype(reference.tensors[name], dtype))

        st.write_like(reference, staging, produce, lambda spec: output_dtype(spec, dtype))
        st.copy_side_files(reference.directory, staging)
        write_soup_record(
            staging,
            {
                "experts": [os.path.abspath(path) for path in experts],
                "weights": lambdas.tolist(),
                "base": os.path.abspath(base) if base else None,
                **dataclasses.asdict(rule),
            },
        )
    shards = f", {len(reference.files)} shards" if reference.sharded else ""
    return f"Hugging Face safetensors model ({rule.method}, {len(reference.tensors)} tensors{shards})"
