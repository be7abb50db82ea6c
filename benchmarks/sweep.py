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
from collections.abc import Callable

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


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, evaluation batch, grid and repeats of the GPT-2-shaped sweep benchmarks."""
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=3)


def build_eval(model: object, batch: int, seq: int, vocab: int) -> Callable[[dict], jax.Array]:
    """eval_fn(params) -> (mean log-likelihood, mean entropy) on one fixed batch of random tokens."""
    tokens = jax.random.randint(jax.random.key(2), (batch, seq), 0, vocab)
    return jax.tree_util.Partial(likelihood_and_entropy, model.module, tokens)


def floor_seconds(
    eval_fn: Callable[[dict], jax.Array], params: dict, points: int, repeats: int
) -> tuple[float, float]:
    """(one jitted eval's median seconds, the floor: ``points`` times that)."""
    single = jax.jit(eval_fn)
    single_seconds = median_seconds(lambda: single(params), repeats)
    return single_seconds, points * single_seconds


def model_info(args: argparse.Namespace, params: dict) -> dict:
    """The model measured, as the result JSONs record it."""
    return {
        "class": "FlaxGPT2LMHeadModel",
        "layers": args.layers,
        "width": args.width,
        "vocab": args.vocab,
        "params": int(sum(leaf.size for leaf in jax.tree.leaves(params))),
    }


def write_sweep_result(
    args: argparse.Namespace,
    params: dict,
    timings: tuple[float, float],
    benchmark: str,
    what: str,
    measured: dict,
) -> None:
    """Writes ``args.out``: the benchmark, the model of ``params`` (``model_info``), the
    (single eval, floor) ``timings`` of ``floor_seconds``, the ``measured`` fields and the machine."""
    single_seconds, floor = timings
    result = {
        "benchmark": benchmark,
        "what": what,
        "model": model_info(args, params),
        "single_eval_seconds": single_seconds,
        "floor_seconds": floor,
        **measured,
        "machine": machine_info(),
        "repeats": args.repeats,
    }
    write_result(args.out, result)
    print(f"single eval {single_seconds:.3f} s; floor {floor:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--out", default="benchmarks/results/sweep.json")
    args = parser.parse_args()

    model, experts = build_experts(args.layers, args.width, args.vocab, args.seq)
    eval_fn = build_eval(model, args.batch, args.seq, args.vocab)
    grid = soup.simplex_grid(2, args.points)
    stacked = soup.stack_experts(experts)
    single_seconds, floor = floor_seconds(eval_fn, experts[0], len(grid), args.repeats)
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

    what = (
        f"K={len(grid)} soups of 2 experts, eval = LM log-likelihood + entropy on "
        f"{args.batch}x{args.seq} tokens; ratio = strategy wall time / (K x single eval)"
    )
    measured = {"auto_resolves_to": soup.default_strategy(), "strategies": rows}
    write_sweep_result(args, experts[0], (single_seconds, floor), "sweep", what, measured)


if __name__ == "__main__":
    main()
