"""λ-sweep strategies side by side: K=11 soups of two 4-layer GPT-2-shaped experts.

    python benchmarks/sweep.py [--out benchmarks/results/sweep.json]

Each soup is evaluated on one batch of 32×64 tokens: eval_fn(params) -> (mean
log-likelihood, mean entropy). For every strategy we report its wall time over
the floor K × (one jitted eval of one model), so 1.00 means "as fast as
evaluating the K models one by one with nothing else to do". Times are medians
of --repeats runs after one compile run.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import transformers
from common import likelihood_and_entropy, machine_info, median_seconds, perturbed_copies, write_result

from rs_jax import soup


def build_experts(layers: int, width: int, vocab: int, seq: int) -> tuple[object, list]:
    config = transformers.GPT2Config(
        n_layer=layers, n_embd=width, n_head=width // 64, vocab_size=vocab, n_positions=seq
    )
    model = transformers.FlaxGPT2LMHeadModel(config, seed=0, input_shape=(1, seq))
    return model, perturbed_copies(model.params, 2, jax.random.key(1), 0.01)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/sweep.json")
    args = parser.parse_args()

    model, experts = build_experts(args.layers, args.width, args.vocab, args.seq)
    tokens = jax.random.randint(jax.random.key(2), (args.batch, args.seq), 0, args.vocab)

    def eval_fn(params):
        return likelihood_and_entropy(model.module, tokens, params)

    grid = soup.simplex_grid(2, args.points)
    stacked = soup.stack_experts(experts)
    single = jax.jit(eval_fn)
    single_seconds = median_seconds(lambda: single(experts[0]), args.repeats)
    floor = len(grid) * single_seconds
    reference = np.asarray(soup.sweep(eval_fn, stacked, grid, strategy="loop"))

    rows = {}
    for strategy, chunk in [("loop", None), ("map", None), ("vmap", None), ("chunked", 4), ("auto", None)]:
        name = strategy if chunk is None else f"{strategy}({chunk})"

        def run(strategy=strategy, chunk=chunk):
            return soup.sweep(eval_fn, stacked, grid, strategy=strategy, chunk_size=chunk)

        seconds = median_seconds(run, args.repeats)
        max_diff = float(np.abs(np.asarray(run()) - reference).max())
        rows[name] = {"seconds": seconds, "ratio_to_floor": seconds / floor, "max_abs_diff_vs_loop": max_diff}
        print(
            f"{name:12s} {seconds:8.3f} s   {seconds / floor:5.2f} × floor   (max |Δ| vs loop {max_diff:.1e})"
        )

    result = {
        "benchmark": "sweep",
        "what": f"K={len(grid)} soups of 2 experts, eval = LM log-likelihood + entropy on "
        f"{args.batch}x{args.seq} tokens; ratio = strategy wall time / (K x single eval)",
        "model": {
            "class": "FlaxGPT2LMHeadModel",
            "layers": args.layers,
            "width": args.width,
            "vocab": args.vocab,
            "params": int(sum(leaf.size for leaf in jax.tree.leaves(experts[0]))),
        },
        "single_eval_seconds": single_seconds,
        "floor_seconds": floor,
        "auto_resolves_to": soup.default_strategy(),
        "strategies": rows,
        "machine": machine_info(),
        "repeats": args.repeats,
    }
    write_result(args.out, result)
    print(f"single eval {single_seconds:.3f} s; floor {floor:.3f} s")


if __name__ == "__main__":
    main()
