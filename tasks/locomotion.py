"""Locomotion: a risky and a cautious runner on brax, their soups, and MORL beside them.

    python -m tasks.locomotion [--preset cpu|paper|smoke] [--out runs/locomotion] [--shard]
                               [--set key=value ...] [--resume]

Paper Appendix G: pre-train PPO on the default dense reward (vx - 0.1·Σa²), keep
the observation normalizer frozen and discard the value function, fine-tune a
risky expert on R₁ = vx and a cautious one on R₂ = vx - Σa², and MORL runs on
(1-μ)R₁ + μR₂; all fine-tunings are one vmapped program. See configs/locomotion.py.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from brax import envs
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper, wrap

from configs import locomotion as locomotion_config
from rs_jax import cli, pipeline
from rs_jax.rewards import locomotion as rewards
from rs_jax.train import ppo


def value_only(params):
    """True on the value head's leaves, False on the policy's: what ``budget.value_warmup_updates`` trains."""
    return {name: jax.tree.map(lambda _, keep=name == "value": keep, tree) for name, tree in params.items()}


def build(config: locomotion_config.LocomotionConfig) -> pipeline.Task:
    """The task's declaration: env, learners, rewards, runs and budget."""
    env = envs.get_environment(config.env, backend=config.backend)
    train_env = wrap(env, episode_length=config.episode_length)
    eval_env = EpisodeWrapper(VmapWrapper(env), episode_length=config.eval_episode_length, action_repeat=1)

    def learner(freeze_normalizer: bool) -> ppo.PPOLearner:
        ppo_config = dataclasses.replace(config.ppo, freeze_normalizer=freeze_normalizer)
        return ppo.PPOLearner(
            train_env, rewards.velocity_and_control, env.observation_size, env.action_size, ppo_config
        )

    pretrain_learner, finetune_learner = learner(False), learner(True)

    def finetuning(params, carry) -> pipeline.FineTuning:
        _, stats = carry

        def start(key):
            params_key, env_key = jax.random.split(key)
            # The paper discards the pre-trained value function.
            fresh_value = finetune_learner.init_params(params_key)["value"]
            env_state, _ = finetune_learner.init_carry(env_key)
            return {"policy": params["policy"], "value": fresh_value}, (env_state, stats)

        def evaluate(policy_params, key):
            returns = ppo.evaluate(
                finetune_learner,
                {"policy": policy_params},
                stats,
                eval_env,
                config.eval_episodes,
                config.eval_episode_length,
                key,
                deterministic=config.eval_deterministic,
            )
            return rewards.risky_cautious(returns)

        return pipeline.FineTuning(
            learner=finetune_learner,
            start=start,
            evaluate=jax.tree_util.Partial(evaluate),
            soup_part=lambda params: params["policy"],
            warmup_trainable=value_only,
        )

    return pipeline.Task(
        name="locomotion",
        reward_names=("risky R1 = vx", "cautious R2 = vx - |a|^2"),
        expert_names=("risky", "cautious"),
        run_mus=np.array([(1.0 - mu, mu) for mu in config.morl_mus]),
        run_weights=np.array([rewards.morl_weights(mu) for mu in config.morl_mus]),
        pretraining=pipeline.Pretraining(
            learner=pretrain_learner,
            init=lambda key: (pretrain_learner.init_params(key), pretrain_learner.init_carry(key)),
            reward_weights=np.asarray(rewards.PRETRAIN_WEIGHTS),
        ),
        finetuning=finetuning,
        budget=config.budget,
        merge_rules=config.merge_rules,
        seed=config.seed,
        rs_points=config.rs_points,
    )


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(argv, name="locomotion", description=__doc__, configs=locomotion_config, build=build)


if __name__ == "__main__":
    main()
