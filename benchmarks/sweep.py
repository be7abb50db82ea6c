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
import jax.numpy as jnp
import numpy as np
import transformers
from common import machine_info, median_seconds, write_result

from rs_jax import soup


def build_experts(layers: int, width: int, vocab: int, seq: int) -> tuple[object, list]:
    config = transformers.GPT2Config(
        n_layer=layers, n_embd=width, n_head=width // 64, vocab_size=vocab, n_positions=seq
    )
    model = transformers.FlaxGPT2LMHeadModel(config, seed=0, input_shape=(1, seq))
    base = model.params
    experts = []
    for index in range(2):
        noise_key = jax.random.fold_in(jax.random.key(1), index)
        leaves, treedef = jax.tree.flatten(base)
        keys = jax.random.split(noise_key, len(leaves))
        perturbed = [
            leaf + 0.01 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)
        ]
        experts.append(jax.tree.unflatten(treedef, perturbed))
    return model, experts


def lm_eval_fn(model, batch: int, seq: int, vocab: int) -> Callable[[object], jax.Array]:
    """params -> (2,) [mean log-likelihood, mean entropy] of a fixed (batch, seq) random token batch."""
    tokens = jax.random.randint(jax.random.key(2), (batch, seq), 0, vocab)
    attention_mask = jnp.ones_like(tokens)
    positions = jnp.broadcast_to(jnp.arange(seq)[None, :], tokens.shape)

    def eval_fn(params):
        logits = model.module.apply({"params": params}, tokens, attention_mask, positions).logits[:, :-1]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
        targets = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)
        entropy = -(jnp.exp(log_probs) * log_probs).sum(-1)
        return jnp.stack([targets.mean(), entropy.mean()])

    return eval_fn


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
    eval_fn = lm_eval_fn(model, args.batch, args.seq, args.vocab)
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
