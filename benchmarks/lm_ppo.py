"""RLHF throughput: one PPO iteration of a LoRA causal LM, and the λ-sweep of generation + scoring.

    python benchmarks/lm_ppo.py [--out benchmarks/results/lm_ppo.json]
    /path/to/torch-env/bin/python benchmarks/lm_ppo_trl.py   # trl's side, into the same JSON

    taskset -c 0 python benchmarks/lm_ppo.py --model smollm2          # SmolLM2-135M-Instruct
    taskset -c 0 /path/to/torch-env/bin/python benchmarks/lm_ppo_trl.py --model smollm2

1. PPO iteration = rollout (generate R tokens for B prompts with the KV cache, policy and
   reference log-probs, values, GAE) + update (epochs × minibatches of clipped PPO steps) —
   ``rs_jax.train.lm_ppo`` through the one trainer, jitted. Reported: response tokens per
   second of a whole iteration, the rollout / update split, and the first call (compile + one
   iteration) apart.
2. λ-sweep (tiny model only): 11 soups of two LoRA experts, each generating greedy responses to
   the evaluation prompts and scoring them, as one ``soup.sweep``; reported against the floor of
   11 single evaluations of one model (1.00 = no overhead), for both LoRA soup modes.

``--model`` (``lm_ppo_setup.py``): ``tiny`` (default) is a random GPT-2 on random prompt ids;
``smollm2`` (or a local HF directory) is the pre-trained model on real movie-review prompts,
B = 16, R = 24, 1 epoch × 1 minibatch by default, written to ``lm_ppo_smollm2.json`` with the
prompt ids and the model's directory, which trl's side reads. Both sides generate exactly R
tokens there (ours with no EOS, trl with ``min_new_tokens``). Pin each side to one core
(``taskset -c 0``) and run them one after the other on an otherwise idle machine.

trl's PPO on the same set-up is ``lm_ppo_trl.py``, run in an environment with
``pip install ".[trl]"`` (torch, trl 0.11): it adds a ``trl`` section and the ratio to the
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
from common import first_call_and_median_seconds, machine_info, median_seconds, write_result

from rs_jax import assets, operands, soup
from rs_jax.data import prompts as prompts_lib
from rs_jax.models import causal_lm, lora
from rs_jax.rewards import tokenizer_bridge
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


def model_directory(name: str) -> str:
    """A local HF directory as given, else the ``rs_jax.assets`` entry of that name (``smollm2``)."""
    return name if os.path.isdir(name) else str(assets.path(name))


def movie_review_ids(tokenizer, args: argparse.Namespace) -> np.ndarray:
    """(B, P) ids of B real movie-review chat prompts, each cut to its first P tokens (P: the
    shortest prompt's length unless --prompt-length asks for fewer), so that no prompt is padded."""
    texts = prompts_lib.movie_review_prompts(
        tokenizer, num_words=setup.MOVIE_REVIEW_WORDS, count=args.prompts, seed=setup.PROMPT_SEED
    )
    rows = tokenizer(texts)["input_ids"]
    shortest = min(len(row) for row in rows)
    length = shortest if args.prompt_length is None else args.prompt_length
    if not 1 <= length <= shortest:
        raise SystemExit(f"--prompt-length must be in 1..{shortest} (the shortest prompt), got {length}.")
    return np.asarray([row[:length] for row in rows], np.int32)


def tiny_policy(args: argparse.Namespace):
    """(model, base params, (B, P) prompt ids, EOS id, model record) of the random GPT-2."""
    config = transformers.GPT2Config(**setup.gpt2_config(args))
    model, base = causal_lm.init_causal_lm(config, jax.random.PRNGKey(0))
    prompts = jax.random.randint(jax.random.PRNGKey(1), (args.prompts, args.prompt_length), 3, args.vocab)
    record = {"family": "gpt2", "layers": args.layers, "width": args.width, "vocab": args.vocab}
    return model, base, prompts, setup.EOS, record, None


def loaded_policy(args: argparse.Namespace):
    """(model, base params, (B, P) prompt ids, EOS id, model record, prompts record) of a
    pre-trained model; EOS None: every response is R tokens long, as trl's ``min_new_tokens``."""
    directory = model_directory(args.model)
    start = time.perf_counter()
    model, base = causal_lm.load_causal_lm(directory)
    base = jax.block_until_ready(base)
    load_s = time.perf_counter() - start
    dtypes = sorted({str(leaf.dtype) for leaf in jax.tree.leaves(base)})
    if dtypes != ["float32"] or model.dtype != jnp.float32:
        raise SystemExit(f"{directory}: expected float32 weights and compute, got {dtypes}, {model.dtype}.")
    tokenizer = tokenizer_bridge.load_tokenizer(directory)
    ids = movie_review_ids(tokenizer, args)
    args.prompt_length = int(ids.shape[1])
    config = model.config
    record = {
        "source": args.model,
        "directory": os.path.abspath(directory),
        "family": config.model_type,
        "layers": config.num_hidden_layers,
        "width": config.hidden_size,
        "vocab": config.vocab_size,
        "dtype": "float32",
        "load_s": load_s,
    }
    prompts_record = {
        "what": (
            f"prompts.movie_review_prompts(num_words={setup.MOVIE_REVIEW_WORDS}, count={args.prompts}, "
            f"seed={setup.PROMPT_SEED}) through the model's chat template, tokenized, each cut to its "
            f"first {args.prompt_length} tokens (the shortest prompt's length unless --prompt-length)"
        ),
        "ids": ids.tolist(),
    }
    return model, base, jnp.asarray(ids), None, record, prompts_record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    setup.add_arguments(parser)
    args = setup.resolve(parser.parse_args())
    tiny = setup.is_tiny(args)
    model, base, prompts, eos_id, model_record, prompts_record = (
        tiny_policy(args) if tiny else loaded_policy(args)
    )
    lora_config = lora.LoraConfig(
        rank=setup.LORA_RANK, alpha=setup.LORA_ALPHA, target_modules=setup.lora_targets(args)
    )
    prompt_pair = (prompts, jnp.ones_like(prompts, bool))
    learner = lm_ppo.LMPPOLearner(
        model,
        base,
        lora_config,
        jax.tree_util.Partial(fixed_prompts, prompt_pair),
        toy_rewards,
        lm_ppo.LMPPOConfig(max_new_tokens=args.new_tokens),
        eos_id=eos_id,
    )
    optimizer = optax.adam(setup.LEARNING_RATE)
    update = operands.jit(trainer.make_update(learner, optimizer, args.epochs, args.minibatches))
    state = trainer.init_state(
        learner.init_params(jax.random.PRNGKey(2)), optimizer, learner.init_carry(jax.random.PRNGKey(0)), 0
    )
    weights = jnp.array(setup.REWARD_WEIGHTS)
    collect = operands.jit(jax.tree_util.Partial(collect_batch, learner, weights))
    first_iteration_s, iteration_s = first_call_and_median_seconds(
        lambda: update(state, weights), args.repeats
    )
    rollout_key = jax.random.PRNGKey(3)
    first_rollout_s, rollout_s = first_call_and_median_seconds(
        lambda: collect(state.params, state.carry, rollout_key), args.repeats
    )
    response_tokens = args.prompts * args.new_tokens
    machine = machine_info()
    machine["cores_allowed"] = sorted(os.sched_getaffinity(0))
    result = {
        "benchmark": "lm_ppo",
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine,
        "model": {
            **model_record,
            "params": int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(base))),
            "lora_targets": list(lora_config.target_modules),
            "lora_rank": lora_config.rank,
            "lora_params": lora.lora_param_count(state.params["lora"]),
            "trainable_params": int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(state.params))),
        },
        "ppo": {
            **setup.ppo_sizes(args),
            "repeats": args.repeats,
            "iteration_s": iteration_s,
            "rollout_s": rollout_s,
            "update_s": iteration_s - rollout_s,
            "response_tokens_per_s": response_tokens / iteration_s,
            "first_iteration_s": first_iteration_s,
            "first_rollout_s": first_rollout_s,
        },
    }
    if prompts_record is not None:
        result["prompts"] = prompts_record
    if tiny:
        result["sweep"] = sweep_section(learner, base, lora_config, prompt_pair, args.repeats)
    result["trl"] = kept_trl_section(args.out)
    print(result["ppo"], result.get("sweep"))
    if isinstance(result["trl"], str):
        print(f"trl side skipped: {result['trl']}")
    else:
        measured_at = result["trl"].get("measured_at")
        print(f"trl side kept from its run of {measured_at}; rerun lm_ppo_trl.py to compare again")
    write_result(args.out, result)


def sweep_section(learner, base, lora_config, prompt_pair, repeats: int) -> dict:
    """The λ-sweep of two LoRA experts (random non-zero factors), greedy responses scored."""
    experts = []
    for index in range(2):
        params = lora.init_lora(base, lora_config, jax.random.PRNGKey(10 + index))
        experts.append(jax.tree.map(lambda leaf, i=index: leaf + 0.02 * (i + 1), params))

    evaluate = jax.tree_util.Partial(mean_greedy_rewards, learner, prompt_pair)
    evaluate_jit = operands.jit(evaluate)
    single_s = median_seconds(lambda: evaluate_jit(experts[0]), repeats)
    grid = soup.simplex_grid(2, 11)
    factors_s = median_seconds(lambda: soup.sweep(evaluate, experts, grid), repeats)
    delta_grid_s = median_seconds(
        lambda: [
            evaluate_jit(lora.interpolate_lora(experts, row, lora_config, mode="delta")) for row in grid
        ],
        repeats,
    )
    floor = len(grid) * single_s
    return {
        "points": len(grid),
        "single_eval_s": single_s,
        "factors_sweep_s": factors_s,
        "factors_over_floor": factors_s / floor,
        "delta_loop_s": delta_grid_s,
        "delta_over_floor": delta_grid_s / floor,
    }


if __name__ == "__main__":
    main()
