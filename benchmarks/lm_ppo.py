"""RLHF throughput: one PPO iteration of a LoRA GPT-2, and the λ-sweep of generation + scoring.

    python benchmarks/lm_ppo.py [--out benchmarks/results/lm_ppo.json]

1. PPO iteration = rollout (generate R tokens for B prompts with the KV cache, policy and
   reference log-probs, values, GAE) + update (epochs × minibatches of clipped PPO steps) —
   ``rs_jax.train.lm_ppo`` through the one trainer, jitted. Reported: response tokens per
   second of a whole iteration, and the rollout / update split.
2. λ-sweep: 11 soups of two LoRA experts, each generating greedy responses to the evaluation
   prompts and scoring them, as one ``soup.sweep``; reported against the floor of 11 single
   evaluations of one model (1.00 = no overhead), for both LoRA soup modes.

trl is not compared: it needs torch, which rs_jax does not install (see README).
Times are medians of --repeats runs after a compile run.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
import transformers
from common import machine_info, median_seconds, write_result

from rs_jax import soup
from rs_jax.models import causal_lm, lora
from rs_jax.train import lm_ppo, trainer

EOS = 2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=32, help="B, prompts per PPO iteration")
    parser.add_argument("--prompt-length", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/lm_ppo.json")
    args = parser.parse_args()

    config = transformers.GPT2Config(
        n_layer=args.layers,
        n_embd=args.width,
        n_head=max(args.width // 64, 1),
        vocab_size=args.vocab,
        n_positions=args.prompt_length + args.new_tokens,
        eos_token_id=EOS,
    )
    model, base = causal_lm.init_causal_lm(config, jax.random.PRNGKey(0))
    lora_config = lora.LoraConfig(rank=8, alpha=16.0, target_modules=("c_attn",))
    prompts = jax.random.randint(jax.random.PRNGKey(1), (args.prompts, args.prompt_length), 3, args.vocab)
    prompt_mask = jnp.ones_like(prompts, bool)

    def rewards(prompt_ids, prompt_mask, tokens, mask):
        even = ((tokens % 2 == 0) & mask).sum(-1)
        return jnp.stack([even, -mask.sum(-1)], axis=-1).astype(jnp.float32)

    learner = lm_ppo.LMPPOLearner(
        model,
        base,
        lora_config,
        lambda key: (prompts, prompt_mask),
        rewards,
        lm_ppo.LMPPOConfig(max_new_tokens=args.new_tokens),
        eos_id=EOS,
    )
    optimizer = optax.adam(1e-4)
    update = jax.jit(trainer.make_update(learner, optimizer, args.epochs, args.minibatches))
    state = trainer.init_state(learner.init_params(jax.random.PRNGKey(2)), optimizer, learner.init_carry(), 0)
    weights = jnp.array([1.0, 0.1])
    collect = jax.jit(lambda params, carry, key: learner.collect(params, carry, weights, key))
    iteration_s = median_seconds(lambda: update(state, weights), args.repeats)
    rollout_key = jax.random.PRNGKey(3)
    rollout_s = median_seconds(lambda: collect(state.params, state.carry, rollout_key), args.repeats)
    response_tokens = args.prompts * args.new_tokens

    # Two LoRA experts (random non-zero factors) and an evaluation: greedy responses, scored.
    experts = []
    for index in range(2):
        params = lora.init_lora(base, lora_config, jax.random.PRNGKey(10 + index))
        experts.append(jax.tree.map(lambda leaf, i=index: leaf + 0.02 * (i + 1), params))

    def evaluate(lora_params):
        sample = learner.generate(lora_params, prompts, prompt_mask, jax.random.PRNGKey(4), greedy=True)
        return rewards(prompts, prompt_mask, sample.tokens, sample.mask).mean(axis=0)

    evaluate_jit = jax.jit(evaluate)
    single_s = median_seconds(lambda: evaluate_jit(experts[0]), args.repeats)
    grid = soup.simplex_grid(2, 11)
    factors_s = median_seconds(lambda: soup.sweep(evaluate, experts, grid), args.repeats)
    delta_grid_s = median_seconds(
        lambda: [
            evaluate_jit(lora.interpolate_lora(experts, row, lora_config, mode="delta")) for row in grid
        ],
        args.repeats,
    )
    floor = len(grid) * single_s
    result = {
        "benchmark": "lm_ppo",
        "machine": machine_info(),
        "model": {
            "family": "gpt2",
            "layers": args.layers,
            "width": args.width,
            "vocab": args.vocab,
            "params": int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(base))),
            "lora_params": lora.lora_param_count(state.params["lora"]),
        },
        "ppo": {
            "prompts": args.prompts,
            "prompt_length": args.prompt_length,
            "new_tokens": args.new_tokens,
            "epochs": args.epochs,
            "minibatches": args.minibatches,
            "iteration_s": iteration_s,
            "rollout_s": rollout_s,
            "update_s": iteration_s - rollout_s,
            "response_tokens_per_s": response_tokens / iteration_s,
        },
        "sweep": {
            "points": len(grid),
            "single_eval_s": single_s,
            "factors_sweep_s": factors_s,
            "factors_over_floor": factors_s / floor,
            "delta_loop_s": delta_grid_s,
            "delta_over_floor": delta_grid_s / floor,
        },
        "trl": "not run: trl needs torch, which this project does not install",
    }
    print(result["ppo"], result["sweep"])
    write_result(args.out, result)


if __name__ == "__main__":
    main()
