"""Merge rules in one sweep: K=11 soups of two 4-layer GPT-2-shaped experts per rule.

    python benchmarks/merge_rules.py [--out benchmarks/results/merge_rules.json]

The experts and the evaluation are those of benchmarks/sweep.py (θ₀ = the random init, each
expert θ₀ + 0.01·noise; eval = mean log-likelihood and entropy on 32×64 tokens). For every rule
of ``rs_jax.merge_rules`` we time ``soup.sweep(eval_fn, experts, grid, merge=rule)`` with the
default strategy and report it over the floor K × (one jitted eval of one model), the floor
measured again just before each rule so that a change in the machine's load between rules
does not enter the ratio: 1.00 means the rule costs nothing beside the evaluations. Beside it,
the TIES trim of the whole model (each task vector to its top 20 % magnitudes) by three ways
of finding the k-th largest magnitude: ``jax.lax.top_k``, a full sort, and the bisection on
bit patterns that ``merge_rules.trim`` uses. Times are medians of --repeats runs after one compile run.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from common import median_seconds
from sweep import add_model_arguments, build_eval, build_experts, floor_seconds, write_sweep_result

from rs_jax import merge_rules, soup

DENSITY = 0.2


def _trim_by(kth_largest):
    """``merge_rules.trim`` of a whole (N, ...)-leaved tree with another k-th-largest finder."""

    def trim_leaf(task_vectors: jax.Array) -> jax.Array:
        size = int(np.prod(task_vectors.shape[1:]))
        k = max(1, int(DENSITY * size))
        magnitudes = jnp.abs(task_vectors).reshape(task_vectors.shape[0], size)
        keep = magnitudes >= kth_largest(magnitudes, k)[:, None]
        return jnp.where(keep.reshape(task_vectors.shape), task_vectors, 0)

    return jax.jit(lambda tree: jax.tree.map(trim_leaf, tree))


TRIMS = {
    "lax.top_k": _trim_by(lambda m, k: jax.lax.top_k(m, k)[0][:, -1]),
    "sort": _trim_by(lambda m, k: jnp.sort(m, axis=1)[:, m.shape[1] - k]),
    "bisection (merge_rules.trim)": jax.jit(
        lambda tree: jax.tree.map(lambda leaf: merge_rules.trim(leaf, DENSITY), tree)
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--rules", nargs="*", help="names of the rules to time (default: all)")
    parser.add_argument("--out", default="benchmarks/results/merge_rules.json")
    args = parser.parse_args()

    model, experts = build_experts(args.layers, args.width, args.vocab, args.seq)
    base = model.params
    eval_fn = build_eval(model, args.batch, args.seq, args.vocab)
    grid = soup.simplex_grid(2, args.points)
    stacked = soup.stack_experts(experts)
    single_seconds, floor = floor_seconds(eval_fn, experts[0], len(grid), args.repeats)  # compiles it once
    fishers = [jax.tree.map(lambda leaf, i=i: jnp.full_like(leaf, 1.0 + i), base) for i in range(2)]
    Partial = jax.tree_util.Partial
    rules = {
        "default (interpolate_stacked)": None,
        "linear": Partial(merge_rules.linear),
        "task_arithmetic(scale=1)": Partial(merge_rules.task_arithmetic, base=base),
        f"ties(density={DENSITY})": Partial(merge_rules.ties, base=base, density=DENSITY),
        "dare(p=0.5)": Partial(merge_rules.dare, base=base, drop_probability=0.5, key=jax.random.key(3)),
        "slerp": Partial(merge_rules.slerp),
        "fisher": Partial(merge_rules.fisher, fishers=soup.stack_experts(fishers)),
    }
    strategy = soup.default_strategy()
    rows = {}
    unknown = set(args.rules or ()) - set(rules)
    if unknown:
        parser.error(f"unknown rules {sorted(unknown)}; choose from {sorted(rules)}")
    for name, rule in rules.items():
        if args.rules and name not in args.rules:
            continue

        def run(rule=rule):
            return soup.sweep(eval_fn, stacked, grid, merge=rule, strategy=strategy)

        _, adjacent_floor = floor_seconds(eval_fn, experts[0], len(grid), args.repeats)
        seconds = median_seconds(run, args.repeats)
        rows[name] = {
            "seconds": seconds,
            "floor_seconds_just_before": adjacent_floor,
            "ratio_to_floor": seconds / adjacent_floor,
        }
        print(f"{name:32s} {seconds:8.3f} s   {seconds / adjacent_floor:5.2f} × floor", flush=True)

    task_vectors = jax.tree.map(lambda leaf, theta0: leaf - theta0[None], stacked, base)
    reference = TRIMS["bisection (merge_rules.trim)"](task_vectors)
    trims = {}
    for name, trim in TRIMS.items():
        seconds = median_seconds(lambda trim=trim: trim(task_vectors), args.repeats)
        same = all(
            bool(jnp.array_equal(a, b))
            for a, b in zip(jax.tree.leaves(trim(task_vectors)), jax.tree.leaves(reference))
        )
        trims[name] = {"seconds": seconds, "same_mask_as_bisection": same}
        print(f"trim by {name:28s} {seconds:8.3f} s   same result: {same}", flush=True)

    what = (
        f"K={len(grid)} soups of 2 experts per merge rule, one soup.sweep each "
        f"(strategy {strategy!r}), eval = LM log-likelihood + entropy on {args.batch}x{args.seq} tokens; "
        "ratio = sweep wall time / (K x single eval, measured just before the rule); "
        "trims = TIES trim of both task vectors "
        f"of the whole model to density {DENSITY}, by how the k-th largest magnitude is found"
    )
    measured = {"strategy": strategy, "rules": rows, "trims": trims}
    write_sweep_result(args, experts[0], (single_seconds, floor), "merge_rules", what, measured)


if __name__ == "__main__":
    main()
