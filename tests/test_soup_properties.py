"""Properties of θ(λ) = Σᵢ λᵢ θᵢ over random nested pytrees and random λ on the simplex (hypothesis).

Interpolation is linear (in the experts and in λ), invariant to permuting experts together with
their weights, and exact at the vertices of the simplex, for float32 and bfloat16 experts.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rs_jax import soup

SETTINGS = settings(max_examples=25, deadline=None)
# Normal floats and zero only: XLA flushes subnormal float32 inputs to zero (e.g. 1e-45 → 0 even at a
# vertex), and no trained parameter lives there.
VALUES = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4)
KEYS = st.text("abcdefgh", min_size=1, max_size=3)


def structures() -> st.SearchStrategy:
    """Nested dicts (1-3 keys per level, up to 6 leaves) whose leaves are array shapes."""
    return st.recursive(
        SHAPES, lambda children: st.dictionaries(KEYS, children, min_size=1, max_size=3), max_leaves=6
    )


@st.composite
def experts_and_weights(draw, dtype=np.float32):
    """N ∈ [1, 4] experts of one random structure, and λ on the N-simplex."""
    structure = draw(structures())
    shapes, treedef = jax.tree.flatten(structure, is_leaf=lambda node: isinstance(node, tuple))
    n_experts = draw(st.integers(1, 4))
    experts = []
    for _ in range(n_experts):
        leaves = [draw(hnp.arrays(np.float32, shape, elements=VALUES)) for shape in shapes]
        experts.append(jax.tree.unflatten(treedef, [jnp.asarray(leaf, dtype) for leaf in leaves]))
    return experts, draw(simplex_points(n_experts))


def simplex_points(n: int) -> st.SearchStrategy:
    """λ ∈ Δ_n: non-negative, not all zero, normalized; vertices drawn often."""
    raw = st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda v: sum(v) > 1e-3)
    vertex = st.integers(0, n - 1).map(lambda i: list(np.eye(n)[i]))
    return st.one_of(vertex, raw).map(lambda v: np.asarray(v, np.float64) / np.sum(v))


def leaves64(tree) -> list[np.ndarray]:
    return [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(tree)]


def assert_close(got, want, scale: float) -> None:
    """float32 accumulation: error ≤ a few ulps of the largest |λᵢθᵢ| term."""
    for a, b in zip(leaves64(got), leaves64(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * scale + 1e-30)


def magnitude(experts) -> float:
    return max(float(np.max(np.abs(leaf), initial=0.0)) for expert in experts for leaf in leaves64(expert))


@SETTINGS
@given(experts_and_weights())
def test_interpolation_is_the_weighted_sum(case):
    experts, weights = case
    merged = soup.interpolate(experts, weights)
    assert jax.tree.structure(merged) == jax.tree.structure(experts[0])
    expected = [sum(w * leaf for w, leaf in zip(weights, leaves)) for leaves in zip(*map(leaves64, experts))]
    for got, want in zip(leaves64(merged), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * magnitude(experts) + 1e-30)


@SETTINGS
@given(experts_and_weights(), st.data())
def test_interpolation_is_linear_in_lambda(case, data):
    experts, first = case
    second = data.draw(simplex_points(len(experts)))
    t = data.draw(st.floats(0.0, 1.0))
    mixed = soup.interpolate(experts, t * first + (1 - t) * second)
    expected = jax.tree.map(
        lambda a, b: t * np.asarray(a, np.float64) + (1 - t) * np.asarray(b, np.float64),
        soup.interpolate(experts, first),
        soup.interpolate(experts, second),
    )
    assert_close(mixed, expected, magnitude(experts))


@SETTINGS
@given(experts_and_weights(), st.randoms(use_true_random=False))
def test_interpolation_is_permutation_invariant(case, random):
    experts, weights = case
    order = list(range(len(experts)))
    random.shuffle(order)
    permuted = soup.interpolate([experts[i] for i in order], weights[order])
    assert_close(permuted, soup.interpolate(experts, weights), magnitude(experts))


@SETTINGS
@given(st.one_of(experts_and_weights(np.float32), experts_and_weights(jnp.bfloat16)), st.data())
def test_interpolation_is_exact_at_the_vertices(case, data):
    experts, _ = case
    vertex = data.draw(st.integers(0, len(experts) - 1))
    merged = soup.interpolate(experts, np.eye(len(experts))[vertex])
    for got, want in zip(jax.tree.leaves(merged), jax.tree.leaves(experts[vertex])):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
