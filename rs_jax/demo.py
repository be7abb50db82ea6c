"""Rewarded soups on an analytic problem, end to end in seconds.

    python -m rs_jax.demo [--out runs/demo] [--isotropic]

Two quadratic rewards R_i(θ) = -mean_k h_ik (θ_k - θ*_ik)² over a 16-dim θ.
From one shared init θ₀ = 0 we fine-tune one expert per reward and 5 MORL runs
on (1-μ)R₁ + μR₂ (all 7 trainings are one vmapped optax program), then sweep
λ ∈ {0, 0.1, …, 1} over the two experts, and compare with the Fisher-weighted
soup (Remark 5) and the analytic Pareto front. With ``--isotropic`` the
Hessians are ∝ identity and the paper's Lemma 2 says RS is exactly optimal;
by default they are anisotropic, where one λ per soup is sub-optimal and
Fisher weighting recovers the front.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rs_jax import experiment, report, soup

DIM = 16
Problem = dict[str, jax.Array]


def make_problem(key: jax.Array, isotropic: bool) -> Problem:
    """Optima θ*_i (2, DIM) and diagonal Hessians h_i (2, DIM) of the two rewards."""
    optima_key, curvature_key = jax.random.split(key)
    optima = jax.random.normal(optima_key, (2, DIM))
    if isotropic:
        curvatures = jnp.array([[1.0], [3.0]]) * jnp.ones((2, DIM))
    else:
        curvatures = jnp.exp(jax.random.uniform(curvature_key, (2, DIM), minval=-2.3, maxval=2.3))
    return {"optima": optima, "curvatures": curvatures}


def rewards(problem: Problem, params: dict[str, jax.Array]) -> jax.Array:
    """(2,) rewards of params {"theta": (DIM,)}."""
    gaps = params["theta"][None, :] - problem["optima"]
    return -jnp.mean(problem["curvatures"] * gaps**2, axis=1)


def optimal_params(problem: Problem, mu: jax.Array) -> dict[str, jax.Array]:
    """argmax_θ μ·R(θ): the curvature-weighted average of the optima (exact)."""
    weighted = mu[:, None] * problem["curvatures"]
    return {"theta": (weighted * problem["optima"]).sum(0) / weighted.sum(0)}


def train(
    problem: Problem, init: dict[str, jax.Array], mu: jax.Array, steps: int = 3000
) -> dict[str, jax.Array]:
    """Fine-tunes ``init`` on μ·R with Adam; pure, so it vmaps over μ."""
    optimizer = optax.adam(optax.cosine_decay_schedule(0.1, steps))

    def step(carry, _):
        params, opt_state = carry
        grads = jax.grad(lambda p: -jnp.dot(mu, rewards(problem, p)))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (init, optimizer.init(init)), length=steps)
    return params


def gaussian_fisher(problem: Problem, expert: dict[str, jax.Array], index: int, key: jax.Array) -> Any:
    """Diagonal Fisher of the Gaussian model y ~ N(θ, diag(1/h_i)) whose log-likelihood is R_i."""

    def log_prob(params, sample):
        return -0.5 * jnp.sum(problem["curvatures"][index] * (sample - params["theta"]) ** 2)

    noise = jax.random.normal(key, (4096, DIM)) / jnp.sqrt(problem["curvatures"][index])[None, :]
    return soup.diagonal_fisher(log_prob, expert, expert["theta"][None, :] + noise, batch_size=1024)


def run(out: str, isotropic: bool = False, seed: int = 0) -> dict[str, Any]:
    """Runs the demo and writes the run directory ``out``; returns the summary numbers."""
    problem_key, fisher_key = jax.random.split(jax.random.key(seed))
    problem = make_problem(problem_key, isotropic)
    init = {"theta": jnp.zeros(DIM)}
    mus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0.0, 1.0]])
    trained = jax.jit(jax.vmap(lambda mu: train(problem, init, mu)))(jnp.asarray(mus, jnp.float32))
    experts = [jax.tree.map(lambda leaf, i=i: leaf[i], trained) for i in range(2)]
    morl_runs = jax.tree.map(lambda leaf: leaf[2:], trained)

    grid = soup.simplex_grid(2, 11)
    evaluate = jax.tree_util.Partial(rewards, problem)
    rs_means = np.asarray(soup.sweep(evaluate, experts, grid))
    morl_means = np.asarray(jax.vmap(evaluate)(morl_runs))

    fishers = [
        gaussian_fisher(problem, expert, i, key)
        for i, (expert, key) in enumerate(zip(experts, jax.random.split(fisher_key)))
    ]
    fisher_means = np.stack([np.asarray(evaluate(soup.fisher_merge(experts, fishers, lam))) for lam in grid])
    dense = soup.simplex_grid(2, 201)
    true_means = np.asarray(jax.vmap(lambda mu: evaluate(optimal_params(problem, mu)))(jnp.asarray(dense)))

    summary = experiment.write_results(
        out,
        reward_names=["R1", "R2"],
        expert_names=["expert R1", "expert R2"],
        rs=experiment.Evaluation(grid, rs_means),
        morl=experiment.Evaluation(mus[2:], morl_means),
        init=experiment.Evaluation(np.full((1, 2), 0.5), np.asarray(evaluate(init))[None]),
        extra_soups={"fisher_soup": experiment.Evaluation(grid, fisher_means)},
        true_front=experiment.Evaluation(dense, true_means),
        config={"task": "demo", "isotropic": isotropic, "seed": seed, "dim": DIM},
        lmc_tolerance=1e-6,
    )
    report.write_html(out)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rs_jax.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="runs/demo", help="run directory to write")
    parser.add_argument("--isotropic", action="store_true", help="Hessians ∝ identity (Lemma 2: RS optimal)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = run(args.out, isotropic=args.isotropic, seed=args.seed)
    print(json.dumps({key: summary[key] for key in summary if key.endswith("expected_utility")}, indent=2))
    print(f"wrote {args.out}/{{results.json,lmc.json,summary.md,front.png,lambda_curves.png,report.html}}")


if __name__ == "__main__":
    main()
