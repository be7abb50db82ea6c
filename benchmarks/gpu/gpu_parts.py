"""The four measurements of ``benchmarks/gpu/run.py``, each a function of its sizes returning a dict.

Imported by ``run.py`` after it has put the carried wheels on the path (brax, mujoco, transformers
4.x are not in the GPU machine's image). Sizes come from ``paper_sizes()`` or, for the CPU dry
run, ``tiny_sizes()``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import brax.envs
import jax
import jax.numpy as jnp
import lm_ppo as lm_ppo_bench
import optax
import ppo_throughput
import transformers
from brax.envs.wrappers.training import wrap
from common import likelihood_and_entropy, median_seconds, perturbed_copies

from configs import locomotion as locomotion_config
from rs_jax import operands, pipeline, soup
from rs_jax.models import causal_lm, lora
from rs_jax.rewards import locomotion
from rs_jax.train import lm_ppo, ppo, trainer

# TinyLlama-1.1B's shape (LLaMA architecture, grouped-query attention): 1.10e9 params.
LLAMA_1B = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
}
# SmolLM2-135M's shape (Hugging Face's config of SmolLM2-135M-Instruct).
SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "rope_theta": 100000.0,
}
TINY_LLAMA = {
    "vocab_size": 256,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each part runs.

    Attributes:
      locomotion: the locomotion config whose env, PPO sizes and optimizer parts (a) and (b) use.
      env_name: "paper" env of ``locomotion`` or brax's ``fast`` test env (dry run).
      ppo_updates: updates of part (a), the first one (compile) timed apart.
      multi_updates: updates of each of the N runs of part (b).
      brax_steps: env steps of brax's ``ppo.train`` beside part (a) (0: not run).
      sweep_model: LlamaConfig keywords of part (c)'s experts.
      sweep_tokens: (B, T) tokens each soup is scored on.
      sweep_points: K soups on the segment between the two experts.
      lora_model: LlamaConfig keywords of part (d)'s base model.
      lora_ppo: (prompts B, prompt length P, new tokens R, epochs, minibatches) of part (d).
      lora_real_weights: load the cached SmolLM2-135M asset in part (d) where there is one.
      repeats: timed repeats (medians) in parts (c) and (d).
    """

    locomotion: locomotion_config.LocomotionConfig
    env_name: str
    ppo_updates: int
    multi_updates: int
    brax_steps: int
    sweep_model: dict[str, Any]
    sweep_tokens: tuple[int, int]
    sweep_points: int
    lora_model: dict[str, Any]
    lora_ppo: tuple[int, int, int, int, int]
    lora_real_weights: bool
    repeats: int


def paper_sizes() -> Sizes:
    """Paper-scale sizes for one short GPU lease."""
    config = locomotion_config.get_config("paper")
    return Sizes(
        locomotion=config,
        env_name=config.env,
        ppo_updates=11,
        multi_updates=4,
        brax_steps=20 * config.ppo.num_envs * config.ppo.unroll_length,
        sweep_model=LLAMA_1B,
        sweep_tokens=(8, 512),
        sweep_points=11,
        lora_model=SMOLLM2_135M,
        lora_ppo=(64, 32, 48, 4, 4),
        lora_real_weights=True,
        repeats=3,
    )


def tiny_sizes() -> Sizes:
    """Seconds on a CPU: the smoke locomotion config on brax's ``fast`` env, a 2-layer LLaMA."""
    return Sizes(
        locomotion=locomotion_config.get_config("smoke"),
        env_name="fast",
        ppo_updates=2,
        multi_updates=2,
        brax_steps=0,
        sweep_model=TINY_LLAMA,
        sweep_tokens=(2, 8),
        sweep_points=3,
        lora_model=TINY_LLAMA,
        lora_ppo=(4, 4, 4, 1, 2),
        lora_real_weights=False,
        repeats=1,
    )


class WithVelocity(brax.envs.Wrapper):
    """brax's ``fast`` test env with the ``x_velocity`` metric the locomotion rewards read."""

    def reset(self, rng: jax.Array) -> brax.envs.State:
        state = self.env.reset(rng)
        return state.replace(metrics={"x_velocity": state.obs[..., 1]})

    def step(self, state: brax.envs.State, action: jax.Array) -> brax.envs.State:
        state = self.env.step(state, action)
        return state.replace(metrics={"x_velocity": state.obs[..., 1]})


@functools.cache
def ppo_setup(
    config: locomotion_config.LocomotionConfig, env_name: str
) -> tuple[brax.envs.Env, str, ppo.PPOLearner, optax.GradientTransformation, jax.tree_util.Partial]:
    """(env, its description, learner, optimizer, update) of the config's fine-tuning phase on
    ``env_name`` (``fast``: brax's test env). Cached, so parts (a) and (b) share one compiled update."""
    if env_name == "fast":
        env, label = WithVelocity(brax.envs.get_environment("fast")), "brax fast (test env) + x_velocity"
    else:
        env = brax.envs.get_environment(env_name, backend=config.backend)
        label = f"brax {env_name} ({config.backend})"
    learner = ppo.PPOLearner(
        wrap(env, episode_length=config.episode_length),
        locomotion.velocity_and_control,
        env.observation_size,
        env.action_size,
        config.ppo,
    )
    budget = config.budget
    optimizer = pipeline.clipped_adam(budget.finetune_learning_rate, budget.max_grad_norm)
    update = trainer.make_update(learner, optimizer, budget.num_epochs, budget.num_minibatches)
    return env, label, learner, optimizer, update


def brax_hyper(config: locomotion_config.LocomotionConfig) -> dict[str, Any]:
    """The locomotion config as ``ppo_throughput.HYPER`` keys, for brax's ``ppo.train``."""
    return {
        **{key: getattr(config.ppo, field) for key, field in ppo_throughput.PPO_FIELDS.items()},
        "num_minibatches": config.budget.num_minibatches,
        "num_epochs": config.budget.num_epochs,
        "learning_rate": config.budget.finetune_learning_rate,
        "episode_length": config.episode_length,
        "eval_episodes": 128,
    }


def ppo_throughput_part(sizes: Sizes) -> dict[str, Any]:
    """(a) Our trainer's env steps per second after compilation, brax's ``ppo.train`` beside it."""
    config = sizes.locomotion
    env, env_label, learner, optimizer, update = ppo_setup(config, sizes.env_name)
    state = ppo_throughput.initial_state(learner, optimizer, 0)
    weights = jnp.asarray(locomotion.PRETRAIN_WEIGHTS)
    _, first, rest = ppo_throughput.timed_fit(update, state, weights, sizes.ppo_updates)
    steps_per_update = config.ppo.num_envs * config.ppo.unroll_length
    result: dict[str, Any] = {
        "env": env_label,
        "num_envs": config.ppo.num_envs,
        "unroll_length": config.ppo.unroll_length,
        "epochs_x_minibatches": [config.budget.num_epochs, config.budget.num_minibatches],
        "policy_layers": list(config.ppo.policy_layers),
        "value_layers": list(config.ppo.value_layers),
        "updates_timed": sizes.ppo_updates - 1,
        "first_update_incl_compile_s": first,
        "env_steps_per_s": (sizes.ppo_updates - 1) * steps_per_update / rest,
    }
    if sizes.brax_steps == 0:
        result["brax_ppo"] = "not run (dry run)"
        return result
    try:
        result["brax_ppo"] = ppo_throughput.run_brax(env, sizes.brax_steps, brax_hyper(config))
        result["throughput_ratio_ours_over_brax"] = (
            result["env_steps_per_s"] / result["brax_ppo"]["steps_per_second"]
        )
    except ImportError as error:
        result["brax_ppo"] = f"not run: {error}"
    return result


def multi_run_part(sizes: Sizes) -> dict[str, Any]:
    """(b) The N runs of the locomotion config (2 experts + MORL μ) vmapped vs one after another."""
    _, _, learner, optimizer, update = ppo_setup(sizes.locomotion, sizes.env_name)
    mus = sizes.locomotion.morl_mus
    weights = jnp.asarray([locomotion.morl_weights(mu) for mu in mus])
    timing = ppo_throughput.together_vs_one_after_another(
        learner, optimizer, update, weights, sizes.multi_updates
    )
    ratio = timing["wall_ratio_together_over_one_after_another"]
    return {"runs": len(mus), "mus": list(mus), **timing, "goal_at_most": 0.6, "meets_goal": ratio <= 0.6}


def _param_bytes(params: Any) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))


def _param_count(params: Any) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _first_call_seconds(fn: Any) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _single_eval_seconds(evaluate: Any, stacked: Any, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, median) seconds of ``evaluate`` on the first stacked expert."""
    expert = jax.tree.map(lambda leaf: leaf[0], stacked)
    single = operands.jit(evaluate)
    return _first_call_seconds(lambda: single(expert)), median_seconds(lambda: single(expert), repeats)


def sweep_part(sizes: Sizes) -> dict[str, Any]:
    """(c) ``soup.sweep(strategy="auto")`` of two bf16 LLaMA experts against K single evaluations."""
    config = transformers.LlamaConfig(**sizes.sweep_model)
    model, params = causal_lm.init_causal_lm(config, jax.random.key(0), dtype=jnp.bfloat16, method="fast")
    base = jax.tree.map(lambda leaf: leaf.astype(jnp.bfloat16), params)
    del params
    stacked = soup.stack_experts(perturbed_copies(base, 2, jax.random.key(1), 0.01))
    del base
    tokens = jax.random.randint(jax.random.key(2), sizes.sweep_tokens, 0, config.vocab_size)
    evaluate = jax.tree_util.Partial(likelihood_and_entropy, model.module, tokens)
    grid = soup.simplex_grid(2, sizes.sweep_points)
    single_compile_s, single_s = _single_eval_seconds(evaluate, stacked, sizes.repeats)
    strategy = soup.default_strategy()
    chunk = soup.default_chunk_size(stacked, len(grid)) if strategy == "chunked" else None
    peak_before = _peak_bytes()

    def run_sweep() -> jax.Array:
        return soup.sweep(evaluate, stacked, grid, strategy="auto")

    sweep_compile_s = _first_call_seconds(run_sweep)
    sweep_s = median_seconds(run_sweep, sizes.repeats)
    peak_after = _peak_bytes()
    one_expert = jax.eval_shape(lambda tree: jax.tree.map(lambda leaf: leaf[0], tree), stacked)
    param_bytes = _param_bytes(one_expert)
    copies = (chunk or 1) + 2
    return {
        "model": {"config": sizes.sweep_model, "params": _param_count(one_expert), "dtype": "bfloat16"},
        "tokens": list(sizes.sweep_tokens),
        "points": len(grid),
        "strategy": strategy,
        "chunk_size": chunk,
        "single_eval_compile_s": single_compile_s,
        "single_eval_s": single_s,
        "sweep_first_call_incl_compile_s": sweep_compile_s,
        "sweep_s": sweep_s,
        "sweep_over_floor": sweep_s / (len(grid) * single_s),
        "goal_over_floor_at_most": 1.1,
        "param_bytes_per_copy": param_bytes,
        "peak_bytes_before_sweep": peak_before,
        "peak_bytes_after_sweep": peak_after,
        "copies_expected": copies,
        "peak_over_expected_copies": None if peak_after is None else peak_after / (copies * param_bytes),
    }


def lora_ppo_part(sizes: Sizes) -> dict[str, Any]:
    """(d) One LoRA PPO iteration (rollout + update) on SmolLM2-135M, real weights if cached."""
    model, base, weights_note = _lora_base_model(sizes)
    prompts_b, prompt_length, new_tokens, epochs, minibatches = sizes.lora_ppo
    vocab = model.config.vocab_size
    prompts = jax.random.randint(jax.random.key(1), (prompts_b, prompt_length), 3, vocab)
    prompt_pair = (prompts, jnp.ones_like(prompts, bool))
    learner = lm_ppo.LMPPOLearner(
        model,
        base,
        lora.LoraConfig(rank=8, alpha=16.0, target_modules=("q_proj", "v_proj")),
        jax.tree_util.Partial(lm_ppo_bench.fixed_prompts, prompt_pair),
        lm_ppo_bench.toy_rewards,
        lm_ppo.LMPPOConfig(max_new_tokens=new_tokens),
        eos_id=vocab - 1,
    )
    optimizer = optax.adam(1e-4)
    update = operands.jit(trainer.make_update(learner, optimizer, epochs, minibatches))
    state = trainer.init_state(
        learner.init_params(jax.random.key(2)), optimizer, learner.init_carry(jax.random.key(0)), 0
    )
    reward_weights = jnp.array([1.0, 0.1])
    compile_s = _first_call_seconds(lambda: update(state, reward_weights))
    iteration_s = median_seconds(lambda: update(state, reward_weights), sizes.repeats)
    return {
        "weights": weights_note,
        "model": {"config": dict(sizes.lora_model), "params": _param_count(base)},
        "prompts_x_prompt_length_x_new_tokens": [prompts_b, prompt_length, new_tokens],
        "epochs_x_minibatches": [epochs, minibatches],
        "first_iteration_incl_compile_s": compile_s,
        "iteration_s": iteration_s,
        "response_tokens_per_s": prompts_b * new_tokens / iteration_s,
    }


def _lora_base_model(sizes: Sizes) -> tuple[Any, Any, str]:
    """(model, float32 params, what they are): the cached SmolLM2-135M asset if
    ``sizes.lora_real_weights`` and the project has its loader and the asset is cached, else
    random weights of ``sizes.lora_model``'s shape (an iteration's cost does not depend on the
    weights' values)."""
    reason = "dry run"
    if sizes.lora_real_weights:
        try:
            from rs_jax import assets

            directory = assets.path("smollm2", fetch_missing=False)
        except (ImportError, ValueError) as error:
            reason = f"real SmolLM2-135M not used: {error}"
        else:
            model, base = causal_lm.load_causal_lm(directory)
            return model, base, f"SmolLM2-135M-Instruct from {directory}"
    config = transformers.LlamaConfig(**sizes.lora_model)
    model, base = causal_lm.init_causal_lm(config, jax.random.key(0), method="fast")
    return model, base, f"random, of this shape ({reason})"
