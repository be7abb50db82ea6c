"""Frozen arrays as operands: split/merge, skeletons as cache keys, and a jit with no embedded weights."""

import jax
import jax.numpy as jnp
import numpy as np
from hlo_text import embedded_constant_sizes

from rs_jax import operands, soup


def scaled_sum(weights, scale, inputs):
    return scale * (inputs @ weights).sum()


def test_split_takes_out_arrays_and_merge_puts_them_back():
    tree = {"weights": jnp.ones((2, 3)), "table": np.arange(4), "fn": scaled_sum, "scale": 2.0, "none": None}
    arrays, skeleton = operands.split(tree)
    assert [array.shape for array in arrays] == [(4,), (2, 3)]  # sorted keys: "table" before "weights"
    merged = skeleton.merge([jnp.zeros(4), jnp.full((2, 3), 5.0)])
    assert merged["fn"] is scaled_sum and merged["scale"] == 2.0 and merged["none"] is None
    np.testing.assert_array_equal(merged["weights"], np.full((2, 3), 5.0))


def test_skeletons_are_equal_for_the_same_static_leaves_whatever_the_arrays():
    first = jax.tree_util.Partial(scaled_sum, jnp.ones((3, 2)), 2.0)
    other_arrays = jax.tree_util.Partial(scaled_sum, jnp.zeros((3, 2)), first.args[1])  # same 2.0 object
    other_function = jax.tree_util.Partial(lambda w, s, x: x, jnp.ones((3, 2)), 2.0)
    assert operands.split(first)[1] == operands.split(other_arrays)[1]
    assert hash(operands.split(first)[1]) == hash(operands.split(other_arrays)[1])
    assert operands.split(first)[1] != operands.split(other_function)[1]


def test_jit_passes_the_held_arrays_as_operands_and_does_not_recompile():
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)), jnp.float32)
    inputs = jnp.ones((4, 64))
    closed = jax.jit(lambda x: scaled_sum(weights, 2.0, x)).lower(inputs).as_text()
    assert max(embedded_constant_sizes(closed)) == weights.size  # the bug the module avoids
    score = operands.jit(jax.tree_util.Partial(scaled_sum, weights, 2.0))
    lowered = score.func.lower(*score.args, inputs)
    assert max(embedded_constant_sizes(lowered.as_text()), default=0) < weights.size
    np.testing.assert_allclose(score(inputs), scaled_sum(weights, 2.0, inputs), rtol=1e-6)
    traces = []

    def counted(w, s, x):
        traces.append(1)
        return scaled_sum(w, s, x)

    for seed in range(2):
        operands.jit(jax.tree_util.Partial(counted, weights + seed, 2.0))(inputs)
    assert len(traces) == 1


def test_sweep_of_a_partial_takes_its_arrays_as_operands():
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(32, 32)), jnp.float32)
    experts = [{"w": jnp.eye(32)}, {"w": 2.0 * jnp.eye(32)}]

    def evaluate(frozen, params):
        return (params["w"] @ frozen).sum(axis=0)

    grid = soup.simplex_grid(2, 3)
    sweep_fn = soup.make_sweep(jax.tree_util.Partial(evaluate, weights), "map")
    stacked = soup.stack_experts(experts)
    text = sweep_fn.func.lower(*sweep_fn.args, stacked, jnp.asarray(grid, jnp.float32)).as_text()
    assert max(embedded_constant_sizes(text), default=0) < weights.size
    closed = soup.sweep(lambda params: evaluate(weights, params), experts, grid, strategy="map")
    np.testing.assert_array_equal(
        soup.sweep(jax.tree_util.Partial(evaluate, weights), experts, grid, strategy="map"), closed
    )
