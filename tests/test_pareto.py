import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import pareto, soup


def test_pareto_mask_and_front():
    points = [[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [0, 3]]
    np.testing.assert_array_equal(pareto.pareto_mask(points), [True, True, True, False, True, False])
    np.testing.assert_array_equal(pareto.pareto_front(points), [[1, 3], [2, 2], [3, 1]])
    with pytest.raises(ValueError, match="finite"):
        pareto.pareto_mask([[0.0, np.nan]])


def test_hypervolume_2d_by_hand():
    # Union of boxes: x in [0,1] up to 3, [1,2] up to 2, [2,3] up to 1 -> 6. (1, 1) is dominated.
    assert pareto.hypervolume([[1, 3], [2, 2], [3, 1], [1, 1]], [0, 0]) == pytest.approx(6.0)
    assert pareto.hypervolume([[1, 3], [2, 2]], [1, 0]) == pytest.approx(2.0)  # (1, 3) adds nothing at x=1
    assert pareto.hypervolume([[-1, -1]], [0, 0]) == 0.0


def test_hypervolume_3d_by_hand():
    assert pareto.hypervolume([[1, 1, 1]], [0, 0, 0]) == pytest.approx(1.0)
    assert pareto.hypervolume([[2, 1, 1], [1, 2, 1]], [0, 0, 0]) == pytest.approx(3.0)
    # Inclusion-exclusion: 2+2+2 - 1-1-1 + 1.
    assert pareto.hypervolume([[2, 1, 1], [1, 2, 1], [1, 1, 2]], [0, 0, 0]) == pytest.approx(4.0)
    assert pareto.hypervolume([[3, 3, 3], [2, 2, 2]], [1, 1, 1]) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="reference"):
        pareto.hypervolume([[1, 1, 1]], [0, 0])


def test_hypervolume_nd_matches_monte_carlo():
    rng = np.random.default_rng(0)
    points = rng.uniform(0.2, 1.0, size=(8, 4))
    samples = rng.uniform(0, 1, size=(200_000, 4))
    dominated = np.any(np.all(samples[:, None, :] <= points[None, :, :], axis=-1), axis=1)
    assert pareto.hypervolume(points, np.zeros(4)) == pytest.approx(dominated.mean(), abs=5e-3)


def test_expected_utility_2d_exact():
    assert pareto.expected_utility([[1, 0], [0, 1]]) == pytest.approx(0.75)
    # max(1-t, t, 0.6): 0.32 + 0.12 + 0.32.
    assert pareto.expected_utility([[1, 0], [0, 1], [0.6, 0.6]]) == pytest.approx(0.76)
    dense = soup.simplex_grid(2, 100_001)
    assert pareto.expected_utility([[1, 0], [0, 1], [0.6, 0.6]], preferences=dense) == pytest.approx(
        0.76, abs=1e-5
    )


@pytest.mark.parametrize("n_rewards", [3, 4, 5])
def test_expected_utility_of_the_vertices_is_the_mean_max_of_a_uniform_preference(n_rewards):
    # E[max(μ)] for μ ~ Dirichlet(1, ..., 1) is H_R / R (11/18 for R = 3). Extra dominated points
    # change nothing.
    harmonic = sum(1 / k for k in range(1, n_rewards + 1))
    points = np.concatenate([np.eye(n_rewards), np.full((3, n_rewards), 0.1)])
    assert pareto.expected_utility(points) == pytest.approx(harmonic / n_rewards, abs=2e-4)
    assert pareto.expected_utility(points, seed=1) != pareto.expected_utility(points)


def test_preference_samples_lie_on_the_simplex_and_repeat_for_a_seed():
    mus = pareto.preference_samples(4, 1024, seed=3)
    assert mus.shape == (1024, 4) and np.all(mus >= 0)
    np.testing.assert_allclose(mus.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(mus.mean(axis=0), 0.25, atol=2e-3)
    np.testing.assert_array_equal(mus, pareto.preference_samples(4, 1024, seed=3))
    with pytest.raises(ValueError, match="power of 2"):
        pareto.preference_samples(3, 1000)


@pytest.mark.parametrize(
    "preferences, message",
    [([[0.5, 0.6]], "row 0"), ([[1.0, 0.0], [1.5, -0.5]], "row 1"), ([[0.5, 0.5, 0.0]], "2 columns")],
)
def test_expected_utility_rejects_preferences_off_the_simplex(preferences, message):
    with pytest.raises(ValueError, match=message):
        pareto.expected_utility([[1, 0], [0, 1]], preferences=preferences)


def test_igd_and_igd_plus_match_pymoo():
    from pymoo.indicators.igd import IGD
    from pymoo.indicators.igd_plus import IGDPlus

    rng = np.random.default_rng(0)
    for n_rewards in (2, 3):
        reference = pareto.pareto_front(rng.uniform(size=(30, n_rewards)))
        points = rng.uniform(size=(12, n_rewards))
        # pymoo minimizes: negate both sets.
        assert pareto.igd(points, reference) == pytest.approx(IGD(-reference)(-points), rel=1e-12)
        assert pareto.igd_plus(points, reference) == pytest.approx(IGDPlus(-reference)(-points), rel=1e-12)


def test_front_quality_by_hand():
    front = [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert pareto.igd(front, front) == 0.0
    # (0.5, 0.5) alone: distances √0.5, 0, √0.5; IGD⁺ counts only the shortfall: 0.5, 0, 0.5.
    assert pareto.igd([[0.5, 0.5]], front) == pytest.approx(2 * np.sqrt(0.5) / 3)
    assert pareto.igd_plus([[0.5, 0.5]], front) == pytest.approx(1 / 3)
    assert pareto.igd_plus([[2.0, 2.0]], front) == 0.0  # dominating every reference point
    assert pareto.cardinality([*front, [0.2, 0.2], [0.5, 0.5]]) == 3
    # Sorted per reward, gaps are 0.5 twice in each reward: (4 · 0.25) / (3 − 1).
    assert pareto.sparsity(front) == pytest.approx(0.5)
    assert pareto.sparsity([[1.0, 1.0]]) == 0.0
    np.testing.assert_array_equal(
        pareto.reference_front([[0.5, 0.5], [0.2, 0.2]], [[1, 0], [0.4, 0.4]]), [[0.5, 0.5], [1, 0]]
    )


def test_max_utility_loss_2d_is_exact():
    reference = [[0.0, 1.0], [0.6, 0.6], [1.0, 0.0]]
    points = [[0.0, 1.0], [1.0, 0.0]]
    # The loss max(0.6, ·) − max(1 − t, t) peaks at t = 0.5: 0.6 − 0.5.
    assert pareto.max_utility_loss(points, reference) == pytest.approx(0.1)
    dense = soup.simplex_grid(2, 10_001)
    rng = np.random.default_rng(1)
    run, other = rng.uniform(size=(7, 2)), rng.uniform(size=(9, 2))
    best = pareto.reference_front(run, other)
    exact = pareto.max_utility_loss(run, best)
    assert exact >= pareto.max_utility_loss(run, best, preferences=dense) > exact - 1e-3
    assert pareto.max_utility_loss(best, best) == 0.0
    three = pareto.max_utility_loss(np.eye(3)[:2], np.eye(3))
    assert three == pytest.approx(1.0, abs=0.02)  # μ near (0, 0, 1) loses the whole third reward


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1])
def test_tolerances_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        pareto.lmc_check([[1.0, 0.0]], [[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], tolerance=bad)
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        pareto.morl_runs_to_match([[1, 0], [0, 1]], [[1, 0]], tolerance=bad)


def test_morl_runs_to_match():
    rs = [[1, 0], [0.6, 0.6], [0, 1]]
    assert pareto.morl_runs_to_match(rs, [[1, 0], [0, 1], [0.6, 0.6]]) == 3
    assert pareto.morl_runs_to_match(rs, [[1, 1]]) == 1
    assert pareto.morl_runs_to_match(rs, [[0.5, 0.5], [1, 0]]) is None


def test_lmc_check_reports_per_lambda_and_reward():
    lambdas = [[1, 0], [0.5, 0.5], [0, 1]]
    experts = [[1.0, 0.0], [0.0, 1.0]]
    soups = [[1.0, 0.0], [0.6, 0.4], [0.0, 1.0]]
    report = pareto.lmc_check(lambdas, soups, experts)
    np.testing.assert_allclose(report.margins[1], [0.1, -0.1])
    np.testing.assert_array_equal(report.holds[1], [True, False])
    assert not report.holds_everywhere
    assert pareto.lmc_check(lambdas, soups, experts, tolerance=0.2).holds_everywhere
    as_dict = report.to_dict(["risky", "cautious"])
    assert as_dict["points"][1]["cautious"]["holds"] is False
    with pytest.raises(ValueError, match="Shapes disagree"):
        pareto.lmc_check(lambdas, soups[:2], experts)


def test_lambda_selection():
    np.testing.assert_allclose(pareto.lambda_from_preference([2, 6]), [0.25, 0.75])
    with pytest.raises(ValueError, match="non-negative"):
        pareto.lambda_from_preference([-1, 2])
    points = [[1, 0], [0.6, 0.6], [0, 1]]
    assert pareto.select_for_preference(points, [0.5, 0.5]) == 1
    assert pareto.select_for_preference(points, [0.9, 0.1]) == 0
    grid = soup.simplex_grid(2, 3)
    rng = np.random.default_rng(0)
    utilities = rng.normal(size=(3, 40)) * 0.1 + np.array([[0.0], [1.0], [0.5]])
    choice = pareto.select_lambda_cross_validated(grid, utilities, num_folds=4)
    assert choice.index == 1
    np.testing.assert_allclose(choice.lambdas, [0.5, 0.5])
    assert choice.fold_indices == [1, 1, 1, 1]
    assert choice.cv_utility == pytest.approx(utilities[1].mean())
    with pytest.raises(ValueError, match="num_folds"):
        pareto.select_lambda_cross_validated(grid, utilities, num_folds=1)


# ----------------------------------------------------------------------------- Lemma 2 toy
# Quadratic rewards R_i(θ) = -Σ_k h_ik (θ_k - θ*_ik)². The MORL optimum for μ is
# θ*(μ) = Σ μ_i h_i θ*_i / Σ μ_i h_i. When h_i = η_i·1 (Hessians ∝ identity) it is the soup
# with λ ∝ μ η, so every soup is Pareto-optimal (paper Lemma 2).


def quadratic_toy(curvatures):
    optima = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5)), jnp.float32)
    curvatures = jnp.asarray(curvatures, jnp.float32)

    def rewards(params):
        return -jnp.sum(curvatures * (params["theta"][None, :] - optima) ** 2, axis=1)

    def optimum(mu):
        weighted = mu[:, None] * curvatures
        return {"theta": (weighted * optima).sum(0) / weighted.sum(0)}

    experts = [{"theta": optima[0]}, {"theta": optima[1]}]
    return rewards, optimum, experts


def optimality_gaps(rewards, optimum, soup_rewards, grid):
    """For each soup: min over μ of [max_θ μ·R(θ) - μ·R(soup)], 0 iff it is optimal for some μ."""
    mus = jnp.asarray(soup.simplex_grid(2, 2001), jnp.float32)
    best = np.asarray(jax.vmap(lambda mu: jnp.dot(mu, rewards(optimum(mu))))(mus))  # (M,)
    achieved = np.asarray(soup_rewards, np.float64) @ np.asarray(mus, np.float64).T  # (K, M)
    return (best[None, :] - achieved).min(axis=1)  # 0 iff the soup is optimal for some μ


def test_lemma2_isotropic_rs_front_is_the_true_front():
    rewards, optimum, experts = quadratic_toy([[1.0] * 5, [3.0] * 5])
    grid = soup.simplex_grid(2, 11)
    rs = np.asarray(soup.sweep(rewards, experts, grid))
    assert optimality_gaps(rewards, optimum, rs, grid).max() < 1e-5
    dense = soup.simplex_grid(2, 2001)
    rs_dense = np.asarray(soup.sweep(rewards, experts, dense))
    true_front = np.asarray(jax.vmap(lambda mu: rewards(optimum(mu)))(jnp.asarray(dense, jnp.float32)))
    assert pareto.expected_utility(rs_dense) == pytest.approx(pareto.expected_utility(true_front), abs=1e-5)
    assert pareto.lmc_check(grid, rs, rs[[0, -1]]).holds_everywhere


def test_lemma2_anisotropic_rs_is_suboptimal_and_fisher_soup_fixes_it():
    curvatures = [[0.1, 1.0, 10.0, 0.3, 3.0], [10.0, 1.0, 0.1, 3.0, 0.3]]
    rewards, optimum, experts = quadratic_toy(curvatures)
    grid = soup.simplex_grid(2, 11)
    rs = np.asarray(soup.sweep(rewards, experts, grid))
    assert optimality_gaps(rewards, optimum, rs, grid)[1:-1].max() > 1e-2
    fishers = [{"theta": jnp.asarray(c, jnp.float32)} for c in curvatures]
    for mu in grid:
        merged = soup.fisher_merge(experts, fishers, mu)
        np.testing.assert_allclose(
            np.asarray(merged["theta"]), np.asarray(optimum(jnp.asarray(mu, jnp.float32))["theta"]), atol=1e-5
        )
