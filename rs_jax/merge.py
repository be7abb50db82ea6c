"""Serve one preference: merge experts into a single checkpoint.

    python -m rs_jax.merge --experts runs/x/experts/risky runs/x/experts/cautious \\
        --weights 0.3 0.7 --out merged/

Experts are either rs_jax expert checkpoints (orbax + manifest; the output is
one too) or Hugging Face Flax model directories (the output is a
``save_pretrained`` directory loadable by transformers). ``--out`` must not
exist yet or be empty: nothing on disk is overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from rs_jax import checkpoint, soup
from rs_jax.models import hf


def _format(weights: Sequence[float]) -> str:
    return ",".join(f"{w:g}" for w in weights)


def merge_orbax(experts: Sequence[str], weights: Sequence[float], out: str, allow_extrapolation: bool) -> str:
    """Interpolates rs_jax expert checkpoints into a new expert checkpoint at ``out``."""
    params, manifests = checkpoint.restore_experts(experts)
    merged = soup.interpolate(params, weights, allow_extrapolation=allow_extrapolation)
    rewards = [manifest.reward for manifest in manifests]
    checkpoint.save_expert(
        out,
        merged,
        reward=f"soup({_format(weights)} of {'+'.join(rewards)})",
        base_model=manifests[0].base_model,
        config={
            "experts": [os.path.abspath(path) for path in experts],
            "rewards": rewards,
            "weights": list(weights),
        },
    )
    return f"orbax expert checkpoint ({checkpoint.param_count(merged)} params)"


def merge_hf(experts: Sequence[str], weights: Sequence[float], out: str, allow_extrapolation: bool) -> str:
    """Interpolates Hugging Face Flax models of one architecture into ``out``."""
    loaded = [hf.load_flax_pretrained(path) for path in experts]
    models = [model for model, _ in loaded]
    architectures = {type(model).__name__ for model in models}
    if len(architectures) != 1:
        raise ValueError(f"Experts have different model classes {sorted(architectures)}.")
    merged = soup.interpolate(
        [params for _, params in loaded], weights, allow_extrapolation=allow_extrapolation
    )
    hf.save_flax_pretrained(models[0], merged, out)
    with open(os.path.join(out, "soup.json"), "w") as handle:
        json.dump(
            {"experts": [os.path.abspath(p) for p in experts], "weights": list(weights)}, handle, indent=2
        )
    return f"Hugging Face Flax model ({architectures.pop()})"


def merge(
    experts: Sequence[str], weights: Sequence[float], out: str, *, allow_extrapolation: bool = False
) -> str:
    """Merges experts (all rs_jax checkpoints or all HF directories) into ``out``; says what it wrote."""
    if len(experts) < 2:
        raise ValueError(f"Give at least two experts; got {len(experts)}.")
    if len(weights) != len(experts):
        raise ValueError(f"Got {len(experts)} experts but {len(weights)} weights.")
    soup.check_weights(weights, len(experts), allow_extrapolation=allow_extrapolation)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out {out} already exists and is not empty; choose a new path.")
    for path in experts:
        if not os.path.isdir(path):
            raise ValueError(f"Expert {path} is not a directory.")
    kinds = {"hf" if hf.is_hf_directory(path) else "orbax" for path in experts}
    if len(kinds) != 1:
        raise ValueError("Mixing rs_jax checkpoints and Hugging Face directories is not supported.")
    merge_fn = merge_hf if kinds == {"hf"} else merge_orbax
    return merge_fn(experts, weights, out, allow_extrapolation)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rs_jax.merge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--experts", nargs="+", required=True, help="expert directories")
    parser.add_argument(
        "--weights", nargs="+", type=float, required=True, help="λ, one per expert, summing to 1"
    )
    parser.add_argument("--out", required=True, help="new output directory")
    parser.add_argument("--allow-extrapolation", action="store_true", help="permit λ outside [0, 1]")
    args = parser.parse_args(argv)
    try:
        written = merge(args.experts, args.weights, args.out, allow_extrapolation=args.allow_extrapolation)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written} to {args.out} (λ = {_format(args.weights)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
