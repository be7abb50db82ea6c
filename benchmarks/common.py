"""What every benchmark records beside its numbers."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from rs_jax.machine import machine_info


def write_result(path: str, result: dict[str, Any]) -> None:
    """Writes a benchmark's JSON (creating its folder) and says where."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {path}")


def merge_variant_entry(path: str, description: str, entry: dict[str, Any], key: Sequence[str]) -> None:
    """Adds ``entry`` to the ``variants`` of the JSON at ``path``, replacing the entry with the
    same ``key`` fields; the file is read just before writing, as variants may run in parallel."""
    previous = {"variants": []}
    if os.path.exists(path):
        with open(path) as handle:
            previous = json.load(handle)
    identity = tuple(entry[field] for field in key)
    keep = [old for old in previous["variants"] if tuple(old.get(field) for field in key) != identity]
    write_result(
        path, {**previous, "description": description, "machine": machine_info(), "variants": [*keep, entry]}
    )


def median_seconds_and_result(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(median wall time of ``fn()`` (results blocked on) over ``repeats`` runs after one warm-up,
    the last result)."""
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def first_call_and_median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(wall time of the first ``fn()`` (compile + run), median of the ``repeats`` runs after it)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up."""
    return median_seconds_and_result(fn, repeats)[0]


def perturbed_copies(base: Any, count: int, key: jax.Array, scale: float) -> list[Any]:
    """``count`` experts near one init: ``base`` + ``scale`` · N(0, 1) per leaf, in each leaf's dtype."""
    leaves, treedef = jax.tree.flatten(base)
    experts = []
    for index in range(count):
        keys = jax.random.split(jax.random.fold_in(key, index), len(leaves))
        noisy = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
        experts.append(jax.tree.unflatten(treedef, noisy))
    return experts


def likelihood_and_entropy(module: Any, tokens: jax.Array, params: Any) -> jax.Array:
    """(2,) [mean next-token log-likelihood, mean predictive entropy] (nats) of ``tokens`` (B, T)
    under a transformers Flax causal LM's ``module`` with ``params``; logits upcast to float32."""
    attention_mask = jnp.ones_like(tokens)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1])[None, :], tokens.shape)
    logits = module.apply({"params": params}, tokens, attention_mask, positions).logits[:, :-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    targets = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)
    entropy = -(jnp.exp(log_probs) * log_probs).sum(-1)
    return jnp.stack([targets.mean(), entropy.mean()])


def read_run(out: str) -> dict:
    """A run directory's results.json, with its samples.json (if any) under ``"samples"``."""
    with open(os.path.join(out, "results.json")) as handle:
        results = json.load(handle)
    samples = os.path.join(out, "samples.json")
    if os.path.exists(samples):
        with open(samples) as handle:
            results["samples"] = json.load(handle)
    return results
