"""RLHF throughput: one PPO iteration of a LoRA GPT-2, and the λ-sweep of generation + scoring.

    python benchmarks/lm_ppo.py [--out benchmarks/results/lm_ppo.json]
    /path/to/torch-env/bin/python benchmarks/lm_ppo_trl.py   # trl's side, into the same JSON

1. PPO iteration = rollout (generate R tokens for B prompts with the KV cache, policy and
   reference log-probs, values, GAE) + update (epochs × minibatches of clipped PPO steps) —
   ``rs_jax.train.lm_ppo`` through the one trainer, jitted. Reported: response tokens per
   second of a whole iteration, and the rollout / update split.
2. λ-sweep: 11 soups of two LoRA experts, each generating greedy responses to the evaluation
   prompts and scoring them, as one ``soup.sweep``; reported against the floor of 11 single
   evaluations of one model (1.00 = no overhead), for both LoRA soup modes.

trl's PPO on the same set-up (``lm_ppo_setup.py``) is ``lm_ppo_trl.py``, run in an environment
with ``pip install ".[trl]"`` (torch, trl 0.11): it adds a ``trl`` section and the ratio to the
JSON, which this script keeps when it rewrites its own sections. The weights the compiled
programs need (base LM, prompts) are their operands (``rs_jax.operands``), as in ``tasks.text``.
Times are medians of --repeats runs after a compile run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import lm_ppo_setup as setup
import numpy as np
import optax
import transformers
from common import machine_info, median_seconds, write_result

from rs_jax import operands, soup
from rs_jax.models import causal_lm, lora
from rs_jax.train import lm_ppo, trainer


def toy_rewards(prompt_ids, prompt_mask, tokens, mask):
    """(B, 2) components: number of even response tokens, minus the response length."""
    even = ((tokens % 2 == 0) & mask).sum(-1)
    return jnp.stack([even, -mask.sum(-1)], axis=-1).astype(jnp.float32)


def fixed_prompts(prompts, key):
    """The same (B, P) prompts every iteration (the benchmark measures compute, not learning)."""
    del key
    return prompts


def collect_batch(learner, reward_weights, params, carry, key):
    """The rollout half of a PPO iteration (``LMPPOLearner.collect``)."""
    return learner.collect(params, carry, reward_weights, key)


def mean_greedy_rewards(learner, prompts, lora_params):
    """(2,) mean rewards of the greedy responses of the policy with these LoRA params."""
    sample = learner.generate(lora_params, *prompts, jax.random.PRNGKey(4), greedy=True)
    return toy_rewards(*prompts, sample.tokens, sample.mask).mean(axis=0)


def kept_trl_section(path: str) -> object:
    """The ``trl`` section a previous ``lm_ppo_trl.py`` run left in ``path``, else a note."""
    if os.path.exists(path):
        with open(path) as handle:
            previous = json.load(handle).get("trl")
        if isinstance(previous, dict):
            return previous
    return "not run yet: run benchmarks/lm_ppo_trl.py in an environment with torch and trl (README)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    setup.add_arguments(parser)
    args = parser.parse_args()

    config = transformers.GPT2Config(**setup.gpt2_config(args))
    model, base = causal_lm.init_causal_lm(config, jax.random.PRNGKey(0))
    lora_config = lora.LoraConfig(
        rank=setup.LORA_RANK, alpha=setup.LORA_ALPHA, target_modules=setup.LORA_TARGETS
    )
    prompts = jax.random.randint(jax.random.PRNGKey(1), (args.prompts, args.prompt_length), 3, args.vocab)
    prompt_pair = (prompts, jnp.ones_like(prompts, bool))
    learner = lm_ppo.LMPPOLearner(
        model,
        base,
        lora_config,
        jax.tree_util.Partial(fixed_prompts, prompt_pair),
        toy_rewards,
        lm_ppo.LMPPOConfig(max_new_tokens=args.new_tokens),
        eos_id=setup.EOS,
    )
    optimizer = optax.adam(setup.LEARNING_RATE)
    update = operands.jit(trainer.make_update(learner, optimizer, args.epochs, args.minibatches))
    state = trainer.init_state(
        learner.init_params(jax.random.PRNGKey(2)), optimizer, learner.init_carry(jax.random.PRNGKey(0)), 0
    )
    weights = jnp.array(setup.REWARD_WEIGHTS)
    collect = operands.jit(jax.tree_util.Partial(collect_batch, learner, weights))
    iteration_s = median_seconds(lambda: update(state, weights), args.repeats)
    rollout_key = jax.random.PRNGKey(3)
    rollout_s = median_seconds(lambda: collect(state.params, state.carry, rollout_key), args.repeats)
    response_tokens = args.prompts * args.new_tokens

    # Two LoRA experts (random non-zero factors) and an evaluation: greedy responses, scored.
    experts = []
    for index in range(2):
        params = lora.init_lora(base, lora_config, jax.random.PRNGKey(10 + index))
        experts.append(jax.tree.map(lambda leaf, i=index: leaf + 0.02 * (i + 1), params))

    evaluate = jax.tree_util.Partial(mean_greedy_rewards, learner, prompt_pair)
    evaluate_jit = operands.jit(evaluate)
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
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
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
            **setup.ppo_sizes(args),
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
        "trl": kept_trl_section(args.out),
    }
    print(result["ppo"], result["sweep"])
    if isinstance(result["trl"], str):
        print(f"trl side skipped: {result['trl']}")
    else:
        measured_at = result["trl"].get("measured_at")
        print(f"trl side kept from its run of {measured_at}; rerun lm_ppo_trl.py to compare again")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
