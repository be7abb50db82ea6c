import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper, wrap
from jax.sharding import PartitionSpec as P
from toy_env import Cart

from rs_jax import distributed
from rs_jax.rewards import locomotion
from rs_jax.train import normalizer, ppo, trainer

CONFIG = ppo.PPOConfig(num_envs=16, unroll_length=8, policy_layers=(16,), value_layers=(16,), discount=0.9)


def make_learner(reward_components=locomotion.velocity_and_control, config=CONFIG):
    return ppo.PPOLearner(wrap(Cart(), episode_length=20), reward_components, 2, 1, config)


def make_state(learner, optimizer, seed=0):
    key = jax.random.PRNGKey(seed)
    return trainer.init_state(learner.init_params(key), optimizer, learner.init_carry(key), seed)


def test_gae_against_hand_computation():
    rewards = jnp.array([[1.0], [2.0], [3.0]])
    values = jnp.array([[0.5], [1.0], [1.5]])
    bootstrap = jnp.array([2.0])
    terminations = jnp.array([[0.0], [1.0], [0.0]])
    truncations = jnp.zeros((3, 1))
    advantages, targets = ppo.gae(rewards, values, bootstrap, terminations, truncations, 0.9, 0.5)
    # t=2: δ = 3 + .9·2 - 1.5 = 3.3; t=1 (terminal): δ = 2 - 1 = 1, A = 1;
    # t=0: δ = 1 + .9·1 - .5 = 1.4, A = 1.4 + .45·1 = 1.85.
    np.testing.assert_allclose(np.asarray(advantages[:, 0]), [1.85, 1.0, 3.3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(targets[:, 0]), [2.35, 2.0, 4.8], rtol=1e-6)
    truncated, _ = ppo.gae(
        rewards, values, bootstrap, jnp.zeros((3, 1)), jnp.array([[0.0], [1.0], [0.0]]), 0.9, 0.5
    )
    # A truncated step contributes no TD error and cuts the recursion: A_1 = 0, A_0 = δ_0 = 1 + .9·1 - .5.
    np.testing.assert_allclose(np.asarray(truncated[:, 0]), [1.4, 0.0, 3.3], rtol=1e-6)


def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    first, second = rng.normal(2.0, 3.0, size=(5, 7, 3)), rng.normal(-1.0, 0.5, size=(11, 3))
    stats = normalizer.update_stats(
        normalizer.update_stats(normalizer.init_stats(3), jnp.asarray(first)), jnp.asarray(second)
    )
    everything = np.concatenate([first.reshape(-1, 3), second])
    np.testing.assert_allclose(np.asarray(stats.mean), everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), everything.var(0), rtol=1e-4)
    assert float(stats.count) == 46


def test_reward_components_from_brax_metrics():
    env = wrap(Cart(), episode_length=20)
    state = env.reset(jax.random.split(jax.random.PRNGKey(0), 3))
    actions = jnp.array([[0.5], [-1.0], [0.2]])
    next_state = env.step(state, actions)
    components = locomotion.velocity_and_control(state, actions, next_state)
    np.testing.assert_allclose(np.asarray(components), [[0.5, -0.25], [-1.0, -1.0], [0.2, -0.04]], rtol=1e-6)
    risky, cautious = np.asarray(locomotion.risky_cautious(components)).T
    np.testing.assert_allclose(risky, [0.5, -1.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(cautious, [0.25, -2.0, 0.16], rtol=1e-6)
    own = locomotion.env_reward(state, actions, next_state)  # Cart's reward: vx - 0.1·a²
    np.testing.assert_allclose(np.asarray(own), [[0.475], [-1.1], [0.196]], rtol=1e-6)


def test_ppo_learns_the_known_optimum():
    learner = make_learner()
    # A constant step size leaves the mean wandering around 0.5 (0.23 to 0.74 over seeds 0-4);
    # decayed to zero it settles within 0.03 of 0.5 on every one of those seeds.
    updates, num_epochs, num_minibatches = 150, 4, 4
    optimizer = optax.adam(optax.cosine_decay_schedule(3e-3, updates * num_epochs * num_minibatches))
    update = trainer.make_update(learner, optimizer, num_epochs=num_epochs, num_minibatches=num_minibatches)
    weights = jnp.array(locomotion.CAUTIOUS_WEIGHTS)  # vx - a²: best action 0.5
    state, history = trainer.fit(update, make_state(learner, optimizer), weights, updates)
    mean, _ = learner.act(state.params, state.carry[1], jnp.zeros((1, 2)))
    assert float(mean[0, 0]) == pytest.approx(0.5, abs=0.1)
    assert history[-1]["reward"] > history[0]["reward"] + 0.1


def test_vmapped_reward_weights_equal_separate_runs():
    learner = make_learner()
    optimizer = optax.adam(1e-3)
    update = trainer.make_update(learner, optimizer, num_epochs=2, num_minibatches=2)
    weights = jnp.array([locomotion.RISKY_WEIGHTS, locomotion.CAUTIOUS_WEIGHTS])
    states = [make_state(learner, optimizer, seed) for seed in (0, 1)]
    together, _ = trainer.fit(update, trainer.stack_states(states), weights, 3, vmapped=True)
    for index in range(2):
        alone, _ = trainer.fit(update, states[index], weights[index], 3)
        for got, want in zip(jax.tree.leaves(together.params), jax.tree.leaves(alone.params)):
            np.testing.assert_allclose(np.asarray(got[index]), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_collect_runs_folds_the_runs_into_one_env_batch_and_equals_vmapped_collect():
    learner = make_learner()
    states = trainer.stack_states([make_state(learner, optax.adam(1e-3), seed) for seed in (0, 1, 2)])
    weights = jnp.array([locomotion.RISKY_WEIGHTS, locomotion.CAUTIOUS_WEIGHTS, locomotion.PRETRAIN_WEIGHTS])
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    stepped_batches = []

    class RecordingEnv:
        def __getattr__(self, name):
            return getattr(learner.env, name)

        def step(self, state, actions):
            stepped_batches.append(actions.shape)
            return learner.env.step(state, actions)

    folded = dataclasses.replace(learner, env=RecordingEnv())
    got = jax.jit(folded.collect_runs)(states.params, states.carry, weights, keys)
    assert stepped_batches == [(3 * CONFIG.num_envs, 1)], "one physics batch of M·E envs"
    want = jax.jit(jax.vmap(learner.collect))(states.params, states.carry, weights, keys)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)


def test_vmapped_fit_uses_collect_runs_and_equals_a_vmap_of_the_update():
    learner = make_learner()
    optimizer = optax.adam(1e-3)
    update = trainer.make_update(learner, optimizer, num_epochs=2, num_minibatches=2)
    weights = jnp.array([locomotion.RISKY_WEIGHTS, locomotion.CAUTIOUS_WEIGHTS])

    def stacked():
        return trainer.stack_states([make_state(learner, optimizer, seed) for seed in (0, 1)])

    folded, _ = trainer.fit(update, stacked(), weights, 2, vmapped=True)
    per_run = jax.jit(jax.vmap(update))
    state = stacked()
    for _ in range(2):
        state, _ = per_run(state, weights)
    chex.assert_trees_all_close(folded, state, rtol=1e-5, atol=1e-6)


def test_folded_runs_on_an_expert_by_data_mesh_equal_the_single_device_runs():
    learner = make_learner()
    optimizer = optax.adam(1e-3)
    weights = jnp.array([locomotion.RISKY_WEIGHTS, locomotion.CAUTIOUS_WEIGHTS])

    def stacked():
        return trainer.stack_states([make_state(learner, optimizer, seed) for seed in (0, 1)])

    mesh = distributed.make_mesh(expert=2, data=2)
    update = trainer.make_update(learner, optimizer, num_epochs=2, num_minibatches=2, mesh=mesh)
    sharded, _ = trainer.fit(update, stacked(), weights, 2, vmapped=True, mesh=mesh)
    assert sharded.params["policy"]["log_std"].sharding.spec == P("expert")
    update = trainer.make_update(learner, optimizer, num_epochs=2, num_minibatches=2)
    single, _ = trainer.fit(update, stacked(), weights, 2, vmapped=True)
    chex.assert_trees_all_close(sharded, single, rtol=1e-5, atol=1e-6)


class WeakCart(Cart):
    """Cart whose reset gives weakly typed reward and done (Python floats), as brax's ``fast`` env does;
    its step and brax's wrappers then return them and the ``info`` fields with other weak types."""

    def reset(self, rng):
        return super().reset(rng).replace(reward=jnp.asarray(0.0), done=jnp.asarray(0.0))


def test_fit_compiles_the_update_once():
    env = wrap(WeakCart(), episode_length=20)
    learner = ppo.PPOLearner(env, locomotion.velocity_and_control, 2, 1, CONFIG)
    optimizer = optax.adam(1e-3)
    update = trainer.make_update(learner, optimizer, num_epochs=1, num_minibatches=2)
    compiled = trainer.step_function()
    before = compiled._cache_size()
    state, _ = trainer.fit(update, make_state(learner, optimizer), jnp.array(locomotion.RISKY_WEIGHTS), 3)
    trainer.fit(update, state, jnp.array(locomotion.RISKY_WEIGHTS), 5)
    assert compiled._cache_size() == before + 1


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    learner = make_learner()
    optimizer = optax.adam(1e-3)
    update = trainer.make_update(learner, optimizer, num_epochs=2, num_minibatches=2)
    weights = jnp.array(locomotion.PRETRAIN_WEIGHTS)
    straight, _ = trainer.fit(update, make_state(learner, optimizer), weights, 4)
    trainer.fit(update, make_state(learner, optimizer), weights, 2, run_dir=str(tmp_path), checkpoint_every=2)
    resumed, history = trainer.fit(
        update, make_state(learner, optimizer), weights, 4, run_dir=str(tmp_path), resume=True
    )
    assert [record["update"] for record in history] == [3, 4]
    for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2, 3, 4]


class PoisonedLearner:
    """Fits w to 1; its reward becomes NaN from the third update on."""

    def collect(self, params, carry, reward_weights, key):
        reward = jnp.where(carry >= 2, jnp.nan, 1.0) * reward_weights[0]
        return {"targets": jnp.ones(4)}, carry + 1, {"reward": reward}

    def loss(self, params, minibatch, key):
        return jnp.mean(jnp.square(params["w"] - minibatch["targets"])), {}


def test_non_finite_reward_stops_with_a_message(tmp_path):
    optimizer = optax.sgd(0.1)
    update = trainer.make_update(PoisonedLearner(), optimizer, num_epochs=1, num_minibatches=2)
    state = trainer.init_state({"w": jnp.zeros(())}, optimizer, jnp.zeros((), jnp.int32), 0)
    with pytest.raises(trainer.NonFiniteError, match=r"Update 3: metric 'reward' is not finite"):
        trainer.fit(update, state, jnp.ones(1), 10, run_dir=str(tmp_path), checkpoint_every=1)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 2, "the last good checkpoint is the one before the bad update"


def test_fit_refuses_an_update_that_is_not_from_make_update():
    optimizer = optax.sgd(0.1)
    update = trainer.make_update(PoisonedLearner(), optimizer, num_epochs=1, num_minibatches=2)
    state = trainer.init_state({"w": jnp.zeros(())}, optimizer, jnp.zeros((), jnp.int32), 0)
    with pytest.raises(ValueError, match="make_update returns"):
        trainer.fit(lambda s, w: update(s, w), state, jnp.ones(1), 1)


def test_evaluate_sums_components_over_an_episode():
    learner = make_learner()
    params = learner.init_params(jax.random.PRNGKey(0))
    # A policy whose mean action is 0.3 everywhere: zero kernels, output bias 0.3.
    params["policy"] = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            jnp.full_like(leaf, 0.3)
            if "Dense_1" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path)
            else jnp.zeros_like(leaf)
        ),
        params["policy"],
    )
    eval_env = EpisodeWrapper(VmapWrapper(Cart()), episode_length=10, action_repeat=1)
    returns = ppo.evaluate(learner, params, normalizer.init_stats(2), eval_env, 4, 10, jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.asarray(returns), np.tile([3.0, -0.9], (4, 1)), rtol=1e-5)

    # The Gaussian policy (log-std 0: std 1): a clipped sample per step, from keys split off ``key``.
    key = jax.random.PRNGKey(1)
    sampled = ppo.evaluate(
        learner, params, normalizer.init_stats(2), eval_env, 4, 10, key, deterministic=False
    )
    _, action_key = jax.random.split(key)
    noise = jnp.stack([jax.random.normal(k, (4, 1)) for k in jax.random.split(action_key, 10)])
    actions = jnp.clip(0.3 + noise, -1.0, 1.0)[..., 0]  # (steps, episodes)
    expected = jnp.stack([actions.sum(0), -jnp.square(actions).sum(0)], axis=-1)
    np.testing.assert_allclose(np.asarray(sampled), np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(sampled), np.asarray(returns))

    # A tanh-squashed policy executes tanh(mean).
    tanh_learner = make_learner(config=dataclasses.replace(CONFIG, squash="tanh"))
    squashed = ppo.evaluate(tanh_learner, params, normalizer.init_stats(2), eval_env, 4, 10, key)
    np.testing.assert_allclose(
        np.asarray(squashed), np.tile([10 * np.tanh(0.3), -10 * np.tanh(0.3) ** 2], (4, 1)), rtol=1e-5
    )


def test_value_warmup_trains_the_value_head_and_leaves_the_policy_unchanged(tmp_path):
    from rs_jax import pipeline
    from rs_jax.config import BudgetConfig
    from tasks.locomotion import value_only

    learner = make_learner()
    budget = BudgetConfig(0, 1, 1e-3, 1e-3, num_epochs=2, num_minibatches=2, value_warmup_updates=2)
    phase = pipeline.FineTuning(
        learner=learner,
        start=lambda key: (learner.init_params(key), learner.init_carry(key)),
        evaluate=lambda params, key: jnp.zeros((1, 2)),
        warmup_trainable=value_only,
    )
    task = pipeline.Task(
        name="toy",
        reward_names=("r1", "r2"),
        expert_names=("a", "b"),
        run_mus=np.eye(2),
        run_weights=np.array([locomotion.RISKY_WEIGHTS, locomotion.CAUTIOUS_WEIGHTS]),
        pretraining=pipeline.Pretrained(None),
        finetuning=lambda params, carry: phase,
        budget=budget,
        seed=0,
        rs_points=2,
    )
    optimizer = pipeline.clipped_adam(1e-3, 1.0)
    states = trainer.stack_states([make_state(learner, optimizer, seed) for seed in (0, 1)])
    warmed = pipeline.warm_up(str(tmp_path), task, phase, states, optimizer)
    chex.assert_trees_all_equal(warmed.params["policy"], states.params["policy"])
    for before, after in zip(
        jax.tree.leaves(states.params["value"]), jax.tree.leaves(warmed.params["value"])
    ):
        assert np.all(np.any(np.asarray(before != after).reshape(2, -1), axis=1)), "each run's value moved"
    chex.assert_trees_all_equal(warmed.opt_state, jax.vmap(optimizer.init)(warmed.params))
    assert np.all(np.asarray(warmed.step) == 0)
    assert len((tmp_path / "finetune_warmup" / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="warmup_trainable"):
        pipeline.warm_up(
            str(tmp_path), task, dataclasses.replace(phase, warmup_trainable=None), states, optimizer
        )


def test_bound_penalty_counts_only_the_mean_outside_the_action_range():
    learner = make_learner(config=dataclasses.replace(CONFIG, bound_coef=2.0))
    params = learner.init_params(jax.random.PRNGKey(0))
    mlp = params["policy"]["MLP_0"]
    last = sorted(mlp)[-1]
    shifted = {
        **params,
        "policy": {**params["policy"], "MLP_0": {**mlp, last: {**mlp[last], "bias": jnp.full(1, 1.5)}}},
    }
    minibatch = {
        "obs": jnp.zeros((4, 2)),
        "actions": jnp.zeros((4, 1)),
        "log_probs": jnp.zeros(4),
        "advantages": jnp.arange(4.0),
        "targets": jnp.zeros(4),
    }
    _, inside = learner.loss(params, minibatch, None)
    outside_loss, outside = learner.loss(shifted, minibatch, None)
    assert float(inside["out_of_bounds"]) == 0.0
    assert float(outside["out_of_bounds"]) == pytest.approx(0.25, rel=1e-3)  # (1.5 - 1)², one action
    unpenalized = dataclasses.replace(learner, config=CONFIG)
    assert float(outside_loss - unpenalized.loss(shifted, minibatch, None)[0]) == pytest.approx(0.5, rel=1e-3)
