"""Reward-weighted regression: filtering, min-0/mean-1 rescaling, MORL scalarization, loss weighting,
and a fine-tune through the one trainer that lands on the hand-computed weighted mean."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rs_jax.train import rwr, trainer


def test_rescaling_gives_min_zero_and_mean_one():
    weights = rwr.rescale_rewards(jnp.array([1.0, 2.0, 3.0, 6.0]))
    np.testing.assert_allclose(weights, [0.0, 0.5, 1.0, 2.5], rtol=1e-6)
    assert float(weights.min()) == 0.0 and float(weights.mean()) == pytest.approx(1.0)
    np.testing.assert_array_equal(rwr.rescale_rewards(jnp.full((3,), 7.0)), [1.0, 1.0, 1.0])


def test_filter_keeps_the_best_fraction_then_rescales_on_the_kept_set():
    kept, weights = rwr.filter_and_rescale(jnp.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2]), 0.5)
    assert kept.tolist() == [1, 4, 2]
    # kept rewards 0.9, 0.7, 0.5 -> shifted 0.4, 0.2, 0 (mean 0.2) -> 2, 1, 0
    np.testing.assert_allclose(weights, [2.0, 1.0, 0.0], rtol=1e-5, atol=1e-6)
    assert rwr.keep_count(10_000, 0.5) == 5000 and rwr.keep_count(3, 0.1) == 1
    with pytest.raises(ValueError, match="keep_fraction"):
        rwr.keep_count(10, 0.0)


def _learner(**kwargs):
    def example_loss(params, examples, key):
        del key
        return jnp.square(params["theta"] - examples["x"])

    return rwr.RWRLearner(example_loss, **kwargs)


def test_collect_draws_only_kept_examples_and_scalarizes_before_filtering():
    x = jnp.arange(8.0)
    # reward 0 favours large x, reward 1 small x; their ½-mixture (standardized) is flat except
    # for the middle example, which both like a little: MORL keeps a different set than either expert.
    components = jnp.stack([x, -x], axis=1).at[3, :].add(10.0)
    carry = rwr.offline_set({"x": x}, components)
    learner = _learner(batch_size=64, keep_fraction=0.25)
    params = {"theta": jnp.zeros(())}
    for mu, allowed in (([1.0, 0.0], {3.0, 7.0}), ([0.0, 1.0], {0.0, 3.0})):
        batch, same_carry, metrics = learner.collect(params, carry, jnp.array(mu), jax.random.key(0))
        assert set(np.asarray(batch["examples"]["x"]).tolist()) <= allowed
        assert same_carry is carry and batch["weights"].shape == (64,)
        assert set(np.round(np.asarray(batch["weights"]), 5).tolist()) <= {0.0, 2.0}
        assert metrics["components"].shape == (2,)
    batch, _, _ = learner.collect(params, carry, jnp.array([0.5, 0.5]), jax.random.key(1))
    assert 3.0 in set(np.asarray(batch["examples"]["x"]).tolist())


def test_standardizing_makes_experts_invariant_to_reward_scale_and_offset():
    components = jax.random.normal(jax.random.key(2), (20, 2))
    scaled = components * jnp.array([[100.0, 0.01]]) + jnp.array([[5.0, -3.0]])
    learner = _learner(batch_size=4)
    mu = jnp.array([0.5, 0.5])
    kept, weights = rwr.filter_and_rescale(learner.scalarized(components, mu), 0.5)
    kept_scaled, weights_scaled = rwr.filter_and_rescale(learner.scalarized(scaled, mu), 0.5)
    assert kept.tolist() == kept_scaled.tolist()
    np.testing.assert_allclose(weights, weights_scaled, rtol=1e-4, atol=1e-5)


def test_loss_is_the_reward_weighted_mean():
    learner = _learner(batch_size=3)
    params = {"theta": jnp.array(1.0)}
    minibatch = {"examples": {"x": jnp.array([0.0, 2.0, 4.0])}, "weights": jnp.array([2.0, 1.0, 0.0])}
    loss, metrics = learner.loss(params, minibatch, jax.random.key(0))
    assert float(loss) == pytest.approx((2.0 * 1.0 + 1.0 * 1.0 + 0.0 * 9.0) / 3)
    assert float(metrics["unweighted_loss"]) == pytest.approx((1.0 + 1.0 + 9.0) / 3)
    grad = jax.grad(lambda p: learner.loss(p, minibatch, jax.random.key(0))[0])(params)
    assert float(grad["theta"]) == pytest.approx((2.0 * 2 * 1.0 + 1.0 * 2 * -1.0) / 3)


def test_fine_tune_through_the_trainer_reaches_the_weighted_mean_of_the_kept_set():
    x = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    carry = rwr.offline_set({"x": x}, x[:, None])  # reward = x
    learner = _learner(batch_size=256, keep_fraction=0.5)
    update = trainer.make_update(learner, optax.adam(0.05), num_epochs=1, num_minibatches=1)
    state = trainer.init_state({"theta": jnp.zeros(())}, optax.adam(0.05), carry, seed=0)
    state, history = trainer.fit(update, state, jnp.array([1.0]), 300)
    # kept x = 7, 6, 5, 4 with weights 3/1.5, 2/1.5, 1/1.5, 0 -> minimizer Σwx/Σw = (21 + 12 + 5)/6
    assert float(state.params["theta"]) == pytest.approx(38.0 / 6.0, abs=0.15)
    assert history[-1]["reward"] == pytest.approx(5.5)


def test_offline_set_checks_shapes():
    with pytest.raises(ValueError, match="share N"):
        rwr.offline_set({"x": jnp.zeros((4,))}, jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="batch_size"):
        _learner(batch_size=0)


def test_one_epoch_of_one_minibatch_is_a_program_without_loops():
    """A length-1 scan stays a while loop, where XLA:CPU runs convolution gradients ~12× slower:
    the trainer calls it directly instead (and scans when there is more than one step)."""
    x = jnp.arange(8.0)
    carry = rwr.offline_set({"x": x}, x[:, None])
    learner = _learner(batch_size=4, keep_fraction=0.5)
    state = trainer.init_state({"theta": jnp.zeros(())}, optax.sgd(0.1), carry, seed=0)
    direct = trainer.make_update(learner, optax.sgd(0.1), num_epochs=1, num_minibatches=1)
    looped = trainer.make_update(learner, optax.sgd(0.1), num_epochs=2, num_minibatches=2)
    direct_program = str(jax.make_jaxpr(direct)(state, jnp.array([1.0])))
    assert "scan" not in direct_program and "while" not in direct_program
    assert "scan" in str(jax.make_jaxpr(looped)(state, jnp.array([1.0])))
    new_state, metrics = direct(state, jnp.array([1.0]))
    assert float(new_state.params["theta"]) != 0.0 and np.isfinite(float(metrics["loss"]))
