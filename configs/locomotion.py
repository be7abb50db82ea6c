"""Locomotion: risky vs cautious runner (paper Appendix G, Fig. 6).

    python -m tasks.locomotion                      # preset "cpu" (default)
    python -m tasks.locomotion --preset paper       # humanoid, GPU
    python -m tasks.locomotion --set ppo.num_envs=128 budget.finetune_updates=120

An update collects ppo.num_envs × ppo.unroll_length env steps (2560 on the cpu preset).

Presets:
  cpu    brax halfcheetah (positional backend), 234 pre-training updates (599k env steps),
         then five fine-tunings of 116 updates (297k steps each: experts risky μ=0 and
         cautious μ=1, MORL μ=.25/.5/.75) trained vmapped as one program. Halfcheetah's
         default reward has the same form as the paper's humanoid one (vx - 0.1·Σa²),
         and it learns in a CPU budget where humanoid does not (~0.45k steps/s here).
  paper  brax humanoid, Table 5 hyperparameters: 4096 envs, lr 5e-5, γ 0.99,
         policy 6×512, value 5×256, 12207 pre-training and 2441 fine-tuning updates
         (5e8 and 1e8 env steps), for a GPU. Rewards are built from brax's x_velocity and
         the actions only (vx - 0.1·Σa², vx, vx - Σa²), as Appendix G states them;
         humanoid's +5 healthy bonus is not added, episodes still end when it falls.
  smoke  seconds; for tests.

The fresh value head (the paper discards the pre-trained one) is first fitted for 20 updates
on rollouts of the unchanged pre-trained policy, at step size 3e-3, before the policy moves:
without that warm-up the risky expert ends slower than its init. With it, 58 fine-tuning updates
make the risky expert faster than its init only at some seeds; 116 do at seeds 0, 1 and 2 on
one machine type (README, Locomotion; benchmarks/locomotion_finetune.py measures the variants).
Points are scored with actions sampled from the policy, as brax's ppo.train does by default.
"""

from __future__ import annotations

import dataclasses

from configs import preset_config
from rs_jax.config import BudgetConfig, TaskConfig
from rs_jax.train.ppo import PPOConfig

BUDGET = BudgetConfig(
    pretrain_updates=234,
    finetune_updates=116,
    pretrain_learning_rate=3e-4,
    finetune_learning_rate=3e-4,
    num_epochs=4,
    num_minibatches=8,
    value_warmup_updates=20,
    value_warmup_learning_rate=3e-3,
)
PPO = PPOConfig(
    num_envs=256,
    unroll_length=10,
    discount=0.97,
    gae_lambda=0.95,
    clip_epsilon=0.3,
    entropy_coef=1e-3,
    reward_scaling=1.0,
    policy_layers=(64, 64),
    value_layers=(64, 64),
)


@dataclasses.dataclass(frozen=True)
class LocomotionConfig(TaskConfig):
    env: str = "halfcheetah"
    backend: str = "positional"
    episode_length: int = 1000
    budget: BudgetConfig = BUDGET
    ppo: PPOConfig = PPO
    morl_mus: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    eval_episodes: int = 64
    eval_episode_length: int = 500
    # False: score actions sampled from the Gaussian policy, the policy PPO trains (brax's ppo.train
    # default, deterministic_eval=False); True: its mean action.
    eval_deterministic: bool = False


PRESETS: dict[str, LocomotionConfig] = {
    "cpu": LocomotionConfig(),
    "paper": LocomotionConfig(
        env="humanoid",
        backend="generalized",  # brax's default for humanoid
        budget=BudgetConfig(
            pretrain_updates=12_207,
            finetune_updates=2_441,
            pretrain_learning_rate=5e-5,
            finetune_learning_rate=5e-5,
            num_epochs=8,
            num_minibatches=32,
            checkpoint_every=200,
        ),
        ppo=dataclasses.replace(
            PPO,
            num_envs=4096,
            discount=0.99,
            reward_scaling=0.1,
            policy_layers=(512,) * 6,
            value_layers=(256,) * 5,
        ),
        eval_episode_length=1000,
    ),
    "smoke": LocomotionConfig(
        episode_length=50,
        budget=BudgetConfig(
            pretrain_updates=2,
            finetune_updates=1,
            pretrain_learning_rate=3e-4,
            finetune_learning_rate=3e-4,
            num_minibatches=2,
            checkpoint_every=1,
        ),
        ppo=PPOConfig(num_envs=16, unroll_length=5, policy_layers=(8,), value_layers=(8,)),
        morl_mus=(0.0, 0.5, 1.0),
        rs_points=3,
        eval_episodes=4,
        eval_episode_length=10,
    ),
}


def get_config(preset: str = "cpu") -> LocomotionConfig:
    """The config of a preset (see the module docstring)."""
    return preset_config(PRESETS, preset)
