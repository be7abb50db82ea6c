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


def test_expected_utility_3d_lattice():
    vertices = np.eye(3)
    # E[max(mu)] for mu ~ Dirichlet(1,1,1) is 11/18.
    assert pareto.expected_utility(vertices, resolution=300) == pytest.approx(11 / 18, abs=2e-3)


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
