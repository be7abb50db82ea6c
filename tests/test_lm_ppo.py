"""PPO for language models: token rewards, KL = 0 at init, a 2-update smoke run on a tiny LLaMA, and
the frozen base as an operand (not a constant) of the compiled update and λ-sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hlo_text import embedded_constant_sizes

from rs_jax import pipeline, soup
from rs_jax.models import causal_lm, lora
from rs_jax.train import lm_ppo, trainer

VOCAB, EOS, TARGET = 24, 2, 7


def test_token_rewards_put_the_score_on_the_last_response_token():
    score = jnp.array([1.0, -2.0])
    kl = jnp.array([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    mask = jnp.array([[True, True, True], [True, False, False]])
    rewards = lm_ppo.token_rewards(score, kl, mask, jnp.float32(0.5))
    np.testing.assert_allclose(rewards, [[-0.05, -0.1, 1.0 - 0.15], [-2.0 - 0.25, 0.0, 0.0]], rtol=1e-6)


def test_masked_whiten_ignores_padding():
    values = jnp.array([[1.0, 3.0, 100.0]])
    mask = jnp.array([[True, True, False]])
    np.testing.assert_allclose(lm_ppo.masked_whiten(values, mask), [[-1.0, 1.0, 0.0]], atol=1e-4)


def test_adaptive_kl_moves_towards_the_target():
    config = lm_ppo.LMPPOConfig(kl_target=1.0, kl_horizon=100)
    beta = jnp.float32(0.2)
    assert lm_ppo.adapted_kl_coef(beta, jnp.float32(3.0), 10, config) > beta
    assert lm_ppo.adapted_kl_coef(beta, jnp.float32(0.1), 10, config) < beta


@pytest.fixture(scope="module")
def learner():
    with jax.numpy_rank_promotion("allow"):  # module-scoped: runs before the third_party fixture
        model, base = causal_lm.tiny_llama(  # 16 positions: the rotary table is smaller than any weight
            VOCAB, jax.random.PRNGKey(0), hidden_size=16, num_layers=1, max_position_embeddings=16
        )
    prompts = jnp.array([[0, 5, 6], [4, 5, 6]], jnp.int32)
    prompt_mask = prompts != 0

    def target_count(prompt_ids, prompt_mask, tokens, mask):
        return jnp.stack([((tokens == TARGET) & mask).sum(-1), -mask.sum(-1)], axis=-1).astype(jnp.float32)

    return lm_ppo.LMPPOLearner(
        model=model,
        base_params=base,
        lora_config=lora.LoraConfig(rank=2, alpha=4.0),
        sample_prompts=lambda key: (prompts, prompt_mask),
        reward_components=target_count,
        config=lm_ppo.LMPPOConfig(max_new_tokens=6, adaptive_kl=True, kl_target=0.5, kl_horizon=8),
        eos_id=EOS,
    )


@pytest.mark.third_party
def test_kl_is_zero_at_init(learner):
    params = learner.init_params(jax.random.PRNGKey(1))
    _, _, metrics = learner.collect(
        params, learner.init_carry(jax.random.PRNGKey(0)), jnp.array([1.0, 0.0]), jax.random.PRNGKey(2)
    )
    assert float(metrics["kl"]) == 0.0


@pytest.mark.third_party
def test_two_ppo_updates_run_and_change_only_lora_and_value_head(learner):
    params = learner.init_params(jax.random.PRNGKey(1))
    optimizer = optax.adam(1e-2)
    update = trainer.make_update(learner, optimizer, num_epochs=2, num_minibatches=2)
    state = trainer.init_state(params, optimizer, learner.init_carry(jax.random.PRNGKey(0)), seed=0)
    state, history = trainer.fit(update, state, jnp.array([1.0, 0.1]), 2)
    assert len(history) == 2
    for record in history:
        assert all(np.all(np.isfinite(value)) for value in record.values())
    assert history[1]["kl"] != 0.0  # the policy moved away from the reference
    assert float(state.carry["kl_coef"]) != learner.config.kl_coef  # adaptive β moved
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params["lora"], state.params["lora"])
    assert any(jax.tree.leaves(changed))


@pytest.mark.third_party
def test_score_scaling_divides_the_score_by_the_running_std_and_leaves_the_reported_reward(learner):
    import dataclasses

    params = learner.init_params(jax.random.PRNGKey(1))
    carry = learner.init_carry(jax.random.PRNGKey(0))
    carry["score_stats"] = carry["score_stats"]._replace(  # 10 scores seen before: mean 0, std 4
        mean=jnp.zeros(1), var=jnp.full(1, 16.0), count=jnp.float32(10)
    )
    weights, key = jnp.array([3.0, 0.0]), jax.random.PRNGKey(2)
    plain_batch, plain_carry, plain = learner.collect(params, carry, weights, key)
    scaled_learner = dataclasses.replace(
        learner, config=dataclasses.replace(learner.config, score_scaling=True)
    )
    scaled_batch, scaled_carry, scaled = scaled_learner.collect(params, carry, weights, key)
    assert float(scaled["reward"]) == float(plain["reward"])  # metrics report the unscaled score
    stats = scaled_carry["score_stats"]
    assert float(stats.count) == 12 and float(plain_carry["score_stats"].count) == 12
    # At init the KL is 0, so the last-token return is the score alone: scaled by 1/std exactly.
    mask = plain_batch["mask"]
    last = jnp.maximum(mask.sum(-1) - 1, 0)
    ratio = scaled_batch["returns"][jnp.arange(2), last] / plain_batch["returns"][jnp.arange(2), last]
    nonzero = plain_batch["returns"][jnp.arange(2), last] != 0
    np.testing.assert_allclose(ratio[nonzero], 1 / np.sqrt(float(stats.var[0])), rtol=1e-5)


def _largest_weight(learner) -> int:
    return max(leaf.size for leaf in jax.tree.leaves(learner.base_params))


def _base_shapes(learner) -> list[tuple[int, ...]]:
    return [leaf.shape for leaf in jax.tree.leaves(learner.base_params)]


@pytest.mark.third_party
def test_the_compiled_update_takes_the_frozen_base_as_operands(learner):
    """Lowered as ``fit`` runs it for 2 runs vmapped: no base weight is embedded, all are arguments."""
    optimizer = optax.adam(1e-2)
    update = trainer.make_update(learner, optimizer, num_epochs=1, num_minibatches=1)
    state = trainer.init_state(
        learner.init_params(jax.random.PRNGKey(1)), optimizer, learner.init_carry(jax.random.PRNGKey(0)), 0
    )
    states, weights = trainer.stack_states([state, state]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
    closed_over = jax.jit(jax.vmap(lambda s, w: update(s, w))).lower(states, weights).as_text()
    assert max(embedded_constant_sizes(closed_over)) >= _largest_weight(learner)  # what it guards against
    lowered = trainer.step_function(vmapped=True).lower(update, states, weights)
    assert max(embedded_constant_sizes(lowered.as_text()), default=0) < _largest_weight(learner)
    update_arguments = lowered.args_info[0][0]
    assert [argument.shape for argument in jax.tree.leaves(update_arguments)] == _base_shapes(learner)


@pytest.mark.third_party
@pytest.mark.usefixtures("fast_compile")
def test_an_update_with_operands_equals_the_closed_over_one(learner):
    optimizer = optax.adam(1e-2)
    update = trainer.make_update(learner, optimizer, num_epochs=2, num_minibatches=2)
    state = trainer.init_state(
        learner.init_params(jax.random.PRNGKey(1)), optimizer, learner.init_carry(jax.random.PRNGKey(0)), 0
    )
    weights = jnp.array([1.0, 0.1])
    closed_state, closed_metrics = jax.jit(lambda s, w: update(s, w))(state, weights)
    state, metrics = trainer.step_function()(update, jax.tree.map(jnp.array, state), weights)
    for name in closed_metrics:
        np.testing.assert_array_equal(metrics[name], closed_metrics[name], err_msg=name)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(closed_state.params)):
        np.testing.assert_array_equal(got, want)


def _evaluate(learner, prompts, lora_params, key):
    """(B, C) rewards of greedy responses (the shape of ``tasks.text``'s evaluation)."""
    sample = learner.generate(lora_params, *prompts, key, greedy=True)
    return learner.reward_components(*prompts, sample.tokens, sample.mask)


@pytest.mark.third_party
@pytest.mark.usefixtures("fast_compile")
def test_the_lambda_sweep_takes_the_frozen_base_as_operands(learner):
    prompts = (jnp.array([[0, 5, 6], [4, 5, 6]], jnp.int32), jnp.array([[0, 1, 1], [1, 1, 1]], bool))
    evaluate = jax.tree_util.Partial(_evaluate, learner, prompts)
    eval_fn = pipeline.bind_key(evaluate, jax.random.PRNGKey(3))
    fresh = [learner.init_params(jax.random.PRNGKey(i))["lora"] for i in range(2)]
    experts = [
        jax.tree.map(lambda leaf, i=i: leaf + 0.1 * (i + 1), lora_params)
        for i, lora_params in enumerate(fresh)
    ]
    grid = soup.simplex_grid(2, 3)
    sweep_fn = soup.make_sweep(eval_fn, "map")
    lowered = sweep_fn.func.lower(*sweep_fn.args, soup.stack_experts(experts), jnp.asarray(grid, jnp.float32))
    assert max(embedded_constant_sizes(lowered.as_text()), default=0) < _largest_weight(learner)
    assert set(_base_shapes(learner)) <= {argument.shape for argument in jax.tree.leaves(lowered.args_info)}

    def closed_over_eval(lora_params):
        return evaluate(lora_params, jax.random.PRNGKey(3))

    closed_over = soup.sweep(closed_over_eval, experts, grid)
    np.testing.assert_array_equal(soup.sweep(eval_fn, experts, grid), closed_over)
