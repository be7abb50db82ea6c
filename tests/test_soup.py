import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import soup


def make_expert(seed: int, dtype=jnp.float32) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(3, 4)), dtype),
            "bias": jnp.asarray(rng.normal(size=4), dtype),
        },
        "head": [jnp.asarray(rng.normal(size=(4,)), dtype)],
    }


def as_numpy(tree) -> list[np.ndarray]:
    return [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(tree)]


def test_interpolate_matches_numpy():
    experts = [make_expert(seed) for seed in range(3)]
    weights = [0.2, 0.5, 0.3]
    merged = soup.interpolate(experts, weights)
    expected = [sum(w * leaf for w, leaf in zip(weights, leaves)) for leaves in zip(*map(as_numpy, experts))]
    for got, want in zip(as_numpy(merged), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert jax.tree.structure(merged) == jax.tree.structure(experts[0])


def test_interpolate_vertices_are_experts():
    experts = [make_expert(0), make_expert(1)]
    for i in range(2):
        chex_equal = [
            np.array_equal(a, b)
            for a, b in zip(as_numpy(soup.interpolate(experts, np.eye(2)[i])), as_numpy(experts[i]))
        ]
        assert all(chex_equal)


def test_bfloat16_experts_stay_bfloat16():
    experts = [make_expert(0, jnp.bfloat16), make_expert(1, jnp.bfloat16)]
    merged = soup.interpolate(experts, [0.5, 0.5])
    assert {leaf.dtype for leaf in jax.tree.leaves(merged)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize(
    "weights, message",
    [
        ([0.5, 0.6], "sum to 1"),
        ([-0.2, 1.2], "allow_extrapolation"),
        ([1.0], "2 entries"),
        ([0.3, 0.3, 0.4], "2 entries"),
        ([float("nan"), 1.0], "finite"),
        (["a", "b"], "numbers"),
    ],
)
def test_bad_weights_raise(weights, message):
    with pytest.raises(ValueError, match=message):
        soup.interpolate([make_expert(0), make_expert(1)], weights)


def test_extrapolation_allowed_when_asked():
    experts = [make_expert(0), make_expert(1)]
    merged = soup.interpolate(experts, [-0.5, 1.5], allow_extrapolation=True)
    want = [-0.5 * a + 1.5 * b for a, b in zip(as_numpy(experts[0]), as_numpy(experts[1]))]
    for got, expected in zip(as_numpy(merged), want):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_structure_mismatch_names_leaf():
    other = make_expert(1)
    other["dense"]["scale"] = other["dense"].pop("bias")
    with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\]"):
        soup.interpolate([make_expert(0), other], [0.5, 0.5])


def test_shape_mismatch_names_leaf():
    other = make_expert(1)
    other["dense"]["kernel"] = jnp.zeros((3, 5))
    with pytest.raises(ValueError, match=r"\['dense'\]\['kernel'\] has shape \(3, 5\)"):
        soup.interpolate([make_expert(0), other], [0.5, 0.5])


def test_dtype_mismatch_names_leaf():
    other = make_expert(1)
    other["head"][0] = other["head"][0].astype(jnp.bfloat16)
    with pytest.raises(ValueError, match=r"\['head'\]\[0\] has dtype bfloat16"):
        soup.interpolate([make_expert(0), other], [0.5, 0.5])


def test_integer_leaf_rejected():
    expert = {"w": jnp.ones(2), "step": jnp.array(3)}
    with pytest.raises(ValueError, match=r"\['step'\].*floating-point"):
        soup.interpolate([expert, expert], [0.5, 0.5])


def test_per_leaf_weights_prefix():
    experts = [make_expert(0), make_expert(1)]
    merged = soup.interpolate(experts, {"dense": [1.0, 0.0], "head": [0.25, 0.75]})
    np.testing.assert_array_equal(
        np.asarray(merged["dense"]["kernel"]), np.asarray(experts[0]["dense"]["kernel"])
    )
    np.testing.assert_allclose(
        np.asarray(merged["head"][0]),
        0.25 * np.asarray(experts[0]["head"][0]) + 0.75 * np.asarray(experts[1]["head"][0]),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match=r"weights\['head'\]"):
        soup.interpolate(experts, {"dense": [1.0, 0.0], "head": [0.25, 0.5]})


def test_simplex_grid():
    grid = soup.simplex_grid(2)
    assert grid.shape == (11, 2)
    np.testing.assert_allclose(grid[:, 1], np.linspace(0, 1, 11))
    grid3 = soup.simplex_grid(3, 5)
    assert grid3.shape == (15, 3)
    np.testing.assert_allclose(grid3.sum(1), 1.0)
    assert len({tuple(row) for row in grid3}) == 15
    with pytest.raises(ValueError):
        soup.simplex_grid(1)


def eval_rewards(params):
    """(2,) rewards of a small MLP on fixed inputs."""
    inputs = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    hidden = jnp.tanh(inputs @ params["dense"]["kernel"] + params["dense"]["bias"][None, :])
    outputs = hidden @ params["head"][0]
    return jnp.stack([outputs.mean(), -jnp.square(outputs).mean()])


def test_sweep_strategies_agree_and_do_not_recompile():
    experts = [make_expert(0), make_expert(1), make_expert(2)]
    grid = soup.simplex_grid(3, 4)
    expected = np.stack([np.asarray(eval_rewards(soup.interpolate(experts, lam))) for lam in grid])
    traces = []

    def counted(params):
        traces.append(1)
        return eval_rewards(params)

    for strategy, chunk in [
        ("loop", None),
        ("vmap", None),
        ("map", None),
        ("chunked", 4),
        ("chunked", 3),
        ("auto", None),
    ]:
        got = soup.sweep(eval_rewards, experts, grid, strategy=strategy, chunk_size=chunk)
        assert got.shape == (len(grid), 2)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6, err_msg=strategy)
    soup.sweep(counted, experts, grid, strategy="map")
    soup.sweep(counted, experts, grid * 1.0, strategy="map")
    assert len(traces) == 1


def test_sweep_rejects_bad_grid():
    experts = [make_expert(0), make_expert(1)]
    with pytest.raises(ValueError, match="allow_extrapolation"):
        soup.sweep(eval_rewards, experts, [[1.5, -0.5]])
    with pytest.raises(ValueError, match="strategy"):
        soup.sweep(eval_rewards, experts, soup.simplex_grid(2), strategy="fast")
    extrapolated = soup.sweep(eval_rewards, experts, [[1.5, -0.5]], allow_extrapolation=True)
    np.testing.assert_allclose(
        np.asarray(extrapolated[0]),
        np.asarray(eval_rewards(soup.interpolate(experts, [1.5, -0.5], allow_extrapolation=True))),
        rtol=1e-6,
    )


def test_default_strategy_is_not_vmap_on_cpu():
    assert soup.default_strategy("cpu") == "map"
    assert soup.default_strategy("gpu") == "chunked"


def test_fisher_merge_with_equal_fishers_is_interpolation():
    experts = [make_expert(0), make_expert(1)]
    fisher = jax.tree.map(lambda leaf: jnp.full_like(leaf, 2.0), experts[0])
    merged = soup.fisher_merge(experts, [fisher, fisher], [0.3, 0.7])
    for got, want in zip(as_numpy(merged), as_numpy(soup.interpolate(experts, [0.3, 0.7]))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_fisher_merge_is_per_parameter_precision_weighting():
    experts = [{"w": jnp.array([0.0, 0.0])}, {"w": jnp.array([1.0, 1.0])}]
    fishers = [{"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([3.0, 0.0])}]
    merged = soup.fisher_merge(experts, fishers, [0.5, 0.5], floor=1e-6)
    # coordinate 0: (0.5*1*0 + 0.5*3*1) / (0.5*1 + 0.5*3) = 0.75; coordinate 1: both floored -> plain average.
    np.testing.assert_allclose(np.asarray(merged["w"]), [0.75, 0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="2 experts but 1"):
        soup.fisher_merge(experts, fishers[:1], [0.5, 0.5])


def test_diagonal_fisher_of_gaussian_is_its_precision(key):
    precision = jnp.array([0.5, 2.0, 8.0])
    params = {"mean": jnp.array([1.0, -1.0, 0.0])}

    def log_prob(p, sample):
        return -0.5 * jnp.sum(precision * (sample - p["mean"]) ** 2)

    samples = params["mean"][None, :] + jax.random.normal(key, (8192, 3)) / jnp.sqrt(precision)[None, :]
    fisher = soup.diagonal_fisher(log_prob, params, samples, batch_size=1024)
    np.testing.assert_allclose(np.asarray(fisher["mean"]), np.asarray(precision), rtol=0.05)
    whole = soup.diagonal_fisher(log_prob, params, samples)
    np.testing.assert_allclose(np.asarray(whole["mean"]), np.asarray(fisher["mean"]), rtol=1e-5)
    with pytest.raises(ValueError, match="divide"):
        soup.diagonal_fisher(log_prob, params, samples, batch_size=1000)


def test_interpolate_rejects_a_grid_of_weights():
    with pytest.raises(ValueError, match=r"one λ of shape \(2,\).*soup.sweep"):
        soup.interpolate([make_expert(0), make_expert(1)], [[0.5, 0.5], [1.0, 0.0]])


def test_sweep_rejects_an_empty_grid():
    with pytest.raises(ValueError, match="grid is empty"):
        soup.sweep(eval_rewards, [make_expert(0), make_expert(1)], np.zeros((0, 2)))


def test_sweep_names_the_lambda_of_a_non_finite_reward():
    experts = [make_expert(0), make_expert(1)]

    def log_of_weight(params):  # NaN once the soup's first head weight is negative
        return jnp.log(params["head"][0][:1])

    first_head = [float(expert["head"][0][0]) for expert in experts]
    assert first_head[0] * first_head[1] < 0  # the grid crosses zero
    grid = soup.simplex_grid(2, 11)
    heads = grid @ np.asarray(first_head)
    row = int(np.flatnonzero(heads < 0)[0])
    with pytest.raises(ValueError, match=rf"grid row {row}, λ = \[{grid[row][0]}, {grid[row][1]}\]"):
        soup.sweep(log_of_weight, experts, grid, strategy="map")


@pytest.mark.parametrize("strategy, chunk", [("loop", None), ("map", None), ("chunked", 2), ("vmap", None)])
def test_progress_bar_ticks_every_point_without_changing_results_or_recompiling(strategy, chunk, capsys):
    experts = [make_expert(0), make_expert(1), make_expert(2)]
    grid = soup.simplex_grid(3, 3)
    traces = []

    def counted(params):
        traces.append(1)
        return eval_rewards(params)

    quiet = soup.sweep(eval_rewards, experts, grid, strategy=strategy, chunk_size=chunk)
    for _ in range(2):
        shown = soup.sweep(counted, experts, grid, strategy=strategy, chunk_size=chunk, progress="λ grid")
        np.testing.assert_array_equal(np.asarray(shown), np.asarray(quiet))
    assert len(traces) == 1
    bar = capsys.readouterr().err.strip().split("\r")[-1]
    assert bar.startswith("λ grid: 100%") and f"{len(grid)}/{len(grid)}" in bar


def test_the_progress_bar_shows_column_means_of_per_sample_rewards():
    from rs_jax import progress

    per_sample = np.array([[1.0, 10.0, 0.0, 0.0, 5.0], [3.0, 20.0, 0.0, 0.0, 5.0]])
    assert progress.summary(per_sample) == "[ 2. 15.  0.  0. …]"
    assert progress.summary(np.array([0.5, 0.25])) == "[0.5  0.25]"
