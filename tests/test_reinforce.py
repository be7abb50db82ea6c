import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rs_jax.train import reinforce, trainer

# A contextual bandit: 3 contexts, 4 actions; reward components per (context, action).
COMPONENTS = jnp.array(
    [
        [[1.0, 0.0], [0.0, 1.0], [0.6, 0.6], [0.0, 0.0]],
        [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.6, 0.6]],
        [[0.6, 0.6], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
    ]
)


def bandit_learner(baseline="others", num_samples=5):
    return reinforce.ReinforceLearner(
        sample_inputs=lambda key: jax.random.randint(key, (16,), 0, 3),
        sample_outputs=lambda params, contexts, key: jax.random.categorical(key, params["logits"][contexts]),
        log_prob=lambda params, contexts, actions: jnp.take_along_axis(
            jax.nn.log_softmax(params["logits"][contexts]), actions[:, None], axis=1
        )[:, 0],
        reward_components=lambda contexts, actions: COMPONENTS[contexts, actions],
        num_samples=num_samples,
        baseline=baseline,
    )


def test_leave_one_out_advantages_by_hand():
    rewards = jnp.array([[1.0, 2.0, 6.0]])
    # 1 - (2+6)/2, 2 - (1+6)/2, 6 - (1+2)/2
    np.testing.assert_allclose(np.asarray(reinforce.leave_one_out_advantages(rewards)), [[-3.0, -1.5, 4.5]])
    with pytest.raises(ValueError, match="num_samples >= 2"):
        reinforce.leave_one_out_advantages(jnp.ones((2, 1)))


@pytest.mark.parametrize(
    "weights, best", [((1.0, 0.0), [0, 1, 2]), ((0.0, 1.0), [1, 0, 3]), ((0.5, 0.5), [2, 3, 0])]
)
def test_self_critical_learns_the_best_action_per_reward(weights, best):
    learner = bandit_learner()
    optimizer = optax.adam(0.1)
    update = trainer.make_update(learner, optimizer, num_epochs=1, num_minibatches=1)
    state = trainer.init_state({"logits": jnp.zeros((3, 4))}, optimizer, None, seed=0)
    state, history = trainer.fit(update, state, jnp.asarray(weights), 150)
    assert np.argmax(np.asarray(state.params["logits"]), axis=1).tolist() == best
    assert history[-1]["reward"] > history[0]["reward"]


def test_batch_and_plain_baselines_run_and_bad_baseline_is_refused():
    for baseline in ("batch", "none"):
        learner = bandit_learner(baseline, num_samples=1)
        optimizer = optax.sgd(0.1)
        update = trainer.make_update(learner, optimizer, num_epochs=1, num_minibatches=2)
        state = trainer.init_state({"logits": jnp.zeros((3, 4))}, optimizer, None, seed=0)
        state, _ = trainer.fit(update, state, jnp.array([1.0, 0.0]), 3)
        assert np.all(np.isfinite(np.asarray(state.params["logits"])))
    with pytest.raises(ValueError, match="baseline must be one of"):
        bandit_learner("mean")
    with pytest.raises(ValueError, match="num_samples >= 2"):
        bandit_learner("others", num_samples=1)


def test_supervised_term_is_added_with_its_weight():
    plain = bandit_learner()
    supervised_loss = lambda params, contexts: jnp.mean(params["logits"][contexts] ** 2)  # noqa: E731
    combined = reinforce.ReinforceLearner(
        **{name: getattr(plain, name) for name in ("sample_inputs", "sample_outputs", "log_prob")},
        reward_components=plain.reward_components,
        supervised_loss=supervised_loss,
        supervised_weight=0.5,
        policy_weight=5.0,
    )
    params = {"logits": jnp.arange(12.0).reshape(3, 4) / 10.0}
    batch, _, _ = combined.collect(params, None, jnp.array([1.0, 0.0]), jax.random.key(1))
    policy_loss, _ = plain.loss(params, batch, None)
    loss, metrics = combined.loss(params, batch, None)
    expected = 5.0 * policy_loss + 0.5 * supervised_loss(params, batch["inputs"])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["policy_loss"], policy_loss, rtol=1e-6)
    assert set(metrics) == {"mean_log_prob", "policy_loss", "supervised_loss"}
    with pytest.raises(ValueError, match="must be >= 0"):
        reinforce.ReinforceLearner(**{**vars(plain), "policy_weight": -1.0})


def test_inputs_drawn_by_the_run_reward_weights_differ_per_run_under_vmap():
    # Each run draws context 0 when its first reward weighs more, context 2 otherwise.
    learner = dataclasses.replace(
        bandit_learner(),
        sample_inputs=lambda key, weights: jnp.full((16,), jnp.where(weights[0] > weights[1], 0, 2)),
        inputs_by_weights=True,
    )
    weights = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    params = {"logits": jnp.zeros((2, 3, 4))}
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    batch, _, _ = jax.vmap(learner.collect, in_axes=(0, None, 0, 0))(params, None, weights, keys)
    contexts = np.asarray(batch["inputs"])
    assert (contexts[0] == 0).all() and (contexts[1] == 2).all()
