"""Pareto fronts and the metrics that compare rewarded soups with MORL.

Every function maximizes: a point is a vector of R rewards, larger is better.
These run on the host (numpy) on a few hundred points at most.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import qmc

PREFERENCE_SAMPLES = 2**14  # QMC error of E[max μ] at R = 3-5 below 2e-4 (tests/test_pareto.py)
PREFERENCE_CHUNK = 4096  # preferences scored at once: bounds memory to PREFERENCE_CHUNK × P floats
SIMPLEX_ATOL = 1e-6

# --------------------------------------------------------------------------- helpers


def _as_points(points: Any, name: str = "points") -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have shape (P, R) with P, R >= 1; got {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; got non-finite values in {name}.")
    return array


def _as_preference(preference: Any, n_rewards: int) -> np.ndarray:
    mu = np.asarray(preference, dtype=np.float64)
    if mu.shape != (n_rewards,) or not np.all(np.isfinite(mu)) or np.any(mu < 0) or mu.sum() <= 0:
        raise ValueError(
            f"A preference must be {n_rewards} finite non-negative numbers, not all zero; got {preference!r}."
        )
    return mu / mu.sum()


def _as_tolerance(tolerance: Any, name: str = "tolerance") -> float:
    value = float(tolerance)
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {tolerance!r}.")
    return value


def _as_preferences(preferences: Any, n_rewards: int) -> np.ndarray:
    """(M, R) preferences, each row non-negative and summing to 1."""
    mus = _as_points(preferences, "preferences")
    if mus.shape[1] != n_rewards:
        raise ValueError(f"preferences must have {n_rewards} columns; got {mus.shape}.")
    if np.any(mus < 0) or not np.allclose(mus.sum(axis=1), 1.0, atol=SIMPLEX_ATOL, rtol=0):
        bad = int(
            np.flatnonzero((mus < 0).any(axis=1) | ~np.isclose(mus.sum(axis=1), 1.0, atol=SIMPLEX_ATOL))[0]
        )
        raise ValueError(
            f"preferences must be non-negative rows summing to 1 (points of the simplex); "
            f"row {bad} is {mus[bad].tolist()}."
        )
    return mus


@functools.lru_cache(maxsize=16)
def preference_samples(n_rewards: int, samples: int = PREFERENCE_SAMPLES, seed: int = 0) -> np.ndarray:
    """Quasi-random preferences μ, uniform on the simplex: (samples, n_rewards), read-only.

    A scrambled Sobol sequence in [0, 1)^(R−1) (scipy.stats.qmc, seeded by ``seed``) mapped to
    the simplex by the spacings of each sorted row, which carries the uniform measure on the
    cube to the uniform measure on the simplex.

    Args:
      n_rewards: R ≥ 2.
      samples: a power of 2 (Sobol points are balanced in blocks of 2^m).
      seed: the scrambling's seed: the same seed gives the same preferences.
    """
    if n_rewards < 2:
        raise ValueError(f"Preferences need n_rewards >= 2; got {n_rewards}.")
    if samples < 1 or samples & (samples - 1):
        raise ValueError(f"samples must be a power of 2; got {samples}.")
    cube = qmc.Sobol(d=n_rewards - 1, scramble=True, rng=np.random.default_rng(seed)).random(samples)
    edges = np.concatenate([np.zeros((samples, 1)), np.sort(cube, axis=1), np.ones((samples, 1))], axis=1)
    mus = np.diff(edges, axis=1)
    mus.setflags(write=False)
    return mus


def _best_utilities(points: np.ndarray, preferences: np.ndarray) -> np.ndarray:
    """(M,) max_p μ·R_p for each preference, PREFERENCE_CHUNK preferences at a time."""
    return np.concatenate(
        [
            np.max(preferences[start : start + PREFERENCE_CHUNK] @ points.T, axis=1)
            for start in range(0, len(preferences), PREFERENCE_CHUNK)
        ]
    )


# --------------------------------------------------------------------------- fronts


def pareto_mask(points: Any) -> np.ndarray:
    """(P,) bool: True where no other point is ≥ in every reward and > in one."""
    array = _as_points(points)
    geq = np.all(array[:, None, :] >= array[None, :, :], axis=-1)  # [j, i]: j ≥ i everywhere
    gt = np.any(array[:, None, :] > array[None, :, :], axis=-1)
    dominated = np.any(geq & gt, axis=0)
    return ~dominated


def pareto_front(points: Any) -> np.ndarray:
    """The non-dominated points, sorted by the first reward ascending, duplicates removed."""
    array = _as_points(points)
    front = np.unique(array[pareto_mask(array)], axis=0)
    return front[np.argsort(front[:, 0], kind="stable")]


# --------------------------------------------------------------------------- hypervolume


def hypervolume(points: Any, reference: Any) -> float:
    """Volume dominated by ``points`` and dominating ``reference`` (maximization).

    Exact. 2-D is a sort and sweep; N-D slices along the last reward and recurses
    (fine for the tens of points a front has).

    Args:
      points: (P, R) rewards.
      reference: (R,) reference point, worse than the points that should count;
        points not strictly better than it in every reward contribute nothing.
    """
    array = _as_points(points)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (array.shape[1],) or not np.all(np.isfinite(ref)):
        raise ValueError(f"reference must be {array.shape[1]} finite numbers; got {reference!r}.")
    useful = array[np.all(array > ref, axis=1)]
    if useful.shape[0] == 0:
        return 0.0
    return float(_hypervolume(pareto_front(useful) - ref))


def _hypervolume(front: np.ndarray) -> float:
    """Hypervolume of non-negative points w.r.t. the origin."""
    if front.shape[1] == 1:
        return float(front[:, 0].max())
    if front.shape[1] == 2:
        order = np.argsort(-front[:, 0])
        volume, best_y = 0.0, 0.0
        for x, y in front[order]:
            if y > best_y:
                volume += x * (y - best_y)
                best_y = y
        return volume
    levels = np.unique(front[:, -1])[::-1]  # descending
    volume = 0.0
    for level, next_level in zip(levels, [*levels[1:], 0.0]):
        slab = front[front[:, -1] >= level][:, :-1]
        volume += (level - next_level) * _hypervolume(pareto_front(slab))
    return volume


# --------------------------------------------------------------------------- front quality


def reference_front(*point_sets: Any) -> np.ndarray:
    """The non-dominated points of the union of ``point_sets`` (each (P_k, R)): the best front a
    run found, against which ``igd``/``igd_plus``/``max_utility_loss`` score each method."""
    if not point_sets:
        raise ValueError("reference_front needs at least one set of points.")
    arrays = [_as_points(points, f"point_sets[{k}]") for k, points in enumerate(point_sets)]
    if len({array.shape[1] for array in arrays}) != 1:
        raise ValueError(f"point sets have different numbers of rewards: {[a.shape for a in arrays]}.")
    return pareto_front(np.concatenate(arrays))


def _reference_and_points(points: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    array = _as_points(points)
    front = _as_points(reference, "reference")
    if front.shape[1] != array.shape[1]:
        raise ValueError(f"reference has {front.shape[1]} rewards, points {array.shape[1]}.")
    return array, front


def igd(points: Any, reference: Any) -> float:
    """Inverted generational distance: mean over reference points z of min_p ‖z − R_p‖₂.

    0 when every reference point is offered; smaller is better. ``reference`` is a true
    front, or ``reference_front`` of all the points of a run.

    Args:
      points: (P, R) rewards of one method.
      reference: (Q, R) reference front.
    """
    array, front = _reference_and_points(points, reference)
    distances = np.linalg.norm(front[:, None, :] - array[None, :, :], axis=-1)
    return float(distances.min(axis=1).mean())


def igd_plus(points: Any, reference: Any) -> float:
    """IGD⁺ (Ishibuchi et al., 2015): IGD counting only the rewards where a point falls short.

    mean over z of min_p ‖max(z − R_p, 0)‖₂ (maximization). Weakly Pareto-compliant, unlike
    IGD: a point that dominates a reference point is at distance 0 from it.
    """
    array, front = _reference_and_points(points, reference)
    shortfalls = np.maximum(front[:, None, :] - array[None, :, :], 0.0)
    return float(np.linalg.norm(shortfalls, axis=-1).min(axis=1).mean())


def cardinality(points: Any) -> int:
    """Number of distinct non-dominated points."""
    return len(pareto_front(points))


def sparsity(points: Any) -> float:
    """Mean squared gap between neighbours of the front, per reward (Xu et al., 2020, PGMORL).

    S = 1/(|F| − 1) Σ_j Σ_i (F̃_j[i] − F̃_j[i+1])², with F̃_j the j-th reward of the
    non-dominated points sorted; 0 for a single point. Lower means a denser front; read it
    beside ``cardinality`` (a front of two close points is sparse-free but poor).
    """
    front = pareto_front(points)
    if len(front) < 2:
        return 0.0
    gaps = np.diff(np.sort(front, axis=0), axis=0)
    return float(np.sum(gaps**2) / (len(front) - 1))


def max_utility_loss(
    points: Any,
    reference: Any,
    preferences: Any | None = None,
    samples: int = PREFERENCE_SAMPLES,
    seed: int = 0,
) -> float:
    """Maximum utility loss: max over preferences μ of max_q μ·q − max_p μ·R_p.

    ≥ 0 when ``reference`` is the ``reference_front`` of a union that includes ``points``.

    The worst a user with a linear preference loses by choosing among ``points`` instead of
    ``reference`` (Zintgraf et al., 2015). For R = 2 it is exact: the loss is linear in μ
    between the crossings of the two upper envelopes, so it is maximal at μ = (1, 0), (0, 1)
    or a crossing of two lines. For R ≥ 3 it is the maximum over ``preferences`` (M, R) if
    given, else over ``preference_samples(R, samples, seed)``: a lower bound of the true
    maximum.
    """
    array, front = _reference_and_points(points, reference)
    n_rewards = array.shape[1]
    if preferences is not None:
        mus = _as_preferences(preferences, n_rewards)
    elif n_rewards == 1:
        mus = np.ones((1, 1))
    elif n_rewards == 2:
        mus = _envelope_breakpoints(np.concatenate([pareto_front(array), pareto_front(front)]))
    else:
        mus = preference_samples(n_rewards, samples, seed)
    return float(np.max(_best_utilities(front, mus) - _best_utilities(array, mus)))


def _envelope_breakpoints(points: np.ndarray) -> np.ndarray:
    """(M, 2) μ = (1 − t, t) at t = 0, 1 and every t in (0, 1) where two points' utilities cross."""
    intercepts, slopes = points[:, 0], points[:, 1] - points[:, 0]
    slope_gaps = slopes[None, :] - slopes[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossings = (intercepts[:, None] - intercepts[None, :]) / slope_gaps
    t = crossings[(slope_gaps != 0) & (crossings > 0) & (crossings < 1)]
    t = np.unique(np.concatenate([[0.0, 1.0], t]))
    return np.stack([1.0 - t, t], axis=1)


# --------------------------------------------------------------------------- expected utility


def expected_utility(
    points: Any, preferences: Any | None = None, samples: int = PREFERENCE_SAMPLES, seed: int = 0
) -> float:
    """E_μ max_p μ·R_p over uniform linear preferences μ on the simplex.

    The metric of the paper's rebuttal: the utility a user with a random linear
    preference gets from the best point offered. For R = 2 it is exact (the
    upper envelope of lines is integrated piecewise). For R ≥ 3 it is a
    quasi-Monte-Carlo average over ``preference_samples(R, samples, seed)``
    (error below 2e-4 for R = 3-5 at the default 2^14 samples, measured on the
    simplex's vertices), in memory bounded by ``PREFERENCE_CHUNK`` × P. Given
    ``preferences`` (M, R), rows on the simplex, it averages over them instead.
    """
    array = _as_points(points)
    n_rewards = array.shape[1]
    if preferences is not None:
        return float(np.mean(_best_utilities(array, _as_preferences(preferences, n_rewards))))
    if n_rewards == 1:
        return float(array[:, 0].max())
    if n_rewards == 2:
        return _expected_utility_2d(array)
    front = pareto_front(array)  # dominated points are never the maximum
    return float(np.mean(_best_utilities(front, preference_samples(n_rewards, samples, seed))))


def _expected_utility_2d(points: np.ndarray) -> float:
    """∫₀¹ max_p [(1-t) a_p + t b_p] dt, exactly, via the upper envelope of the lines (O(P log P))."""
    front = pareto_front(points)  # dominated points are never the maximum
    intercepts, slopes = front[:, 0], front[:, 1] - front[:, 0]
    envelope: list[int] = []
    for line in np.lexsort((intercepts, slopes)):  # by slope, then intercept
        if envelope and slopes[envelope[-1]] == slopes[line]:
            envelope.pop()  # same slope, smaller intercept
        while len(envelope) >= 2 and _crossing(intercepts, slopes, envelope[-1], line) <= _crossing(
            intercepts, slopes, envelope[-2], envelope[-1]
        ):
            envelope.pop()
        envelope.append(line)
    a, s = intercepts[envelope], slopes[envelope]
    crossings = (a[:-1] - a[1:]) / (s[1:] - s[:-1])  # where line k+1 overtakes line k
    edges = np.clip(np.concatenate([[0.0], crossings, [1.0]]), 0.0, 1.0)
    low, high = edges[:-1], edges[1:]
    return float(np.sum((high - low) * (a + s * (low + high) / 2)))


def _crossing(intercepts: np.ndarray, slopes: np.ndarray, first: int, second: int) -> float:
    """t where line ``second`` (larger slope) overtakes line ``first``."""
    return (intercepts[first] - intercepts[second]) / (slopes[second] - slopes[first])


def morl_runs_to_match(rs_points: Any, morl_points: Any, tolerance: float = 0.0) -> int | None:
    """Fewest MORL runs whose best subset reaches the expected utility of RS.

    Answers "how many MORL trainings would a user need to do as well as the N
    trainings of RS?" by choosing, for each m, the best m MORL points (exhaustive
    over subsets when cheap, greedy otherwise), within ``tolerance`` (finite, ≥ 0) of RS's
    expected utility. Returns None if all MORL points together stay below RS.
    """
    tolerance = _as_tolerance(tolerance)
    rs_eu = expected_utility(rs_points)
    morl = _as_points(morl_points, "morl_points")
    for size in range(1, len(morl) + 1):
        if math.comb(len(morl), size) <= 5000:
            best = max(
                expected_utility(morl[list(subset)])
                for subset in itertools.combinations(range(len(morl)), size)
            )
        else:
            best = expected_utility(morl[_greedy_subset(morl, size)])
        if best >= rs_eu - tolerance:
            return size
    return None


def _greedy_subset(points: np.ndarray, size: int) -> list[int]:
    chosen: list[int] = []
    for _ in range(size):
        rest = [i for i in range(len(points)) if i not in chosen]
        chosen.append(max(rest, key=lambda i: expected_utility(points[[*chosen, i]])))
    return chosen


# --------------------------------------------------------------------------- LMC


@dataclasses.dataclass(frozen=True)
class LMCReport:
    """Working Hypothesis 1 (linear mode connectivity) at every grid point.

    Attributes:
      lambdas: (K, N) interpolation weights.
      soup_rewards: (K, R) rewards of θ(λ).
      linear_rewards: (K, R) Σᵢ λᵢ Rⱼ(θᵢ), the linear interpolation of the experts' rewards.
      margins: (K, R) soup − linear; ≥ 0 where the hypothesis holds.
      holds: (K, R) margins ≥ −tolerance.
    """

    lambdas: np.ndarray
    soup_rewards: np.ndarray
    linear_rewards: np.ndarray
    margins: np.ndarray
    holds: np.ndarray
    tolerance: float

    @property
    def holds_everywhere(self) -> bool:
        return bool(self.holds.all())

    def to_dict(self, reward_names: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(reward_names or [f"R{j + 1}" for j in range(self.margins.shape[1])])
        return {
            "hypothesis": "R_j(θ(λ)) >= Σ_i λ_i R_j(θ_i) for every reward j (Working Hypothesis 1)",
            "tolerance": self.tolerance,
            "holds_everywhere": self.holds_everywhere,
            "points": [
                {
                    "lambda": lam.tolist(),
                    **{
                        name: {
                            "soup": float(s),
                            "linear": float(lin),
                            "margin": float(m),
                            "holds": bool(h),
                        }
                        for name, s, lin, m, h in zip(names, soup, linear, margin, hold)
                    },
                }
                for lam, soup, linear, margin, hold in zip(
                    self.lambdas, self.soup_rewards, self.linear_rewards, self.margins, self.holds
                )
            ],
        }


def lmc_check(lambdas: Any, soup_rewards: Any, expert_rewards: Any, tolerance: float = 0.0) -> LMCReport:
    """Checks Rⱼ(θ(λ)) ≥ Σᵢ λᵢ Rⱼ(θᵢ) for every λ and reward j.

    For N = 2 and λ = (1-λ, λ) this is the paper's Rⱼ(θ(λ)) ≥ (1-λ)Rⱼ(θ₁) + λRⱼ(θ₂).

    Args:
      lambdas: (K, N) weights of the soups.
      soup_rewards: (K, R) rewards of each soup.
      expert_rewards: (N, R) rewards of each expert θᵢ.
      tolerance: allowed shortfall, finite and ≥ 0 (e.g. a few standard errors of the evaluation).
    """
    tolerance = _as_tolerance(tolerance)
    lam = _as_points(lambdas, "lambdas")
    soups = _as_points(soup_rewards, "soup_rewards")
    experts = _as_points(expert_rewards, "expert_rewards")
    if lam.shape[0] != soups.shape[0] or lam.shape[1] != experts.shape[0]:
        raise ValueError(
            f"Shapes disagree: lambdas {lam.shape} (K, N), soup_rewards {soups.shape} (K, R), "
            f"expert_rewards {experts.shape} (N, R)."
        )
    if soups.shape[1] != experts.shape[1]:
        raise ValueError(f"soup_rewards has {soups.shape[1]} rewards, expert_rewards {experts.shape[1]}.")
    linear = lam @ experts
    margins = soups - linear
    return LMCReport(lam, soups, linear, margins, margins >= -tolerance, tolerance)


# --------------------------------------------------------------------------- λ selection


def lambda_from_preference(preference: Any) -> np.ndarray:
    """λ = μ̂: the soup weights equal to the user's normalized linear preference.

    The paper's default choice; exact when the rewards' Hessians are equal up to
    scale (Lemma 2). Returns (N,) on the simplex.
    """
    mu = np.asarray(preference, dtype=np.float64)
    if mu.ndim != 1 or mu.size < 2:
        raise ValueError(f"A preference is a vector of N >= 2 weights; got {preference!r}.")
    return _as_preference(mu, mu.size)


def select_for_preference(points: Any, preference: Any) -> int:
    """Index of the point maximizing μ·R: the front point a user with preference μ picks."""
    array = _as_points(points)
    return int(np.argmax(array @ _as_preference(preference, array.shape[1])))


@dataclasses.dataclass(frozen=True)
class CrossValidatedChoice:
    """λ chosen on labelled samples.

    Attributes:
      index: row of the grid chosen on all samples.
      lambdas: that row of the grid.
      cv_utility: held-out utility of the choice procedure (mean over folds), an
        unbiased estimate of what the chosen λ gives on new samples.
      fold_indices: the row chosen in each fold.
    """

    index: int
    lambdas: np.ndarray
    cv_utility: float
    fold_indices: list[int]


def select_lambda_cross_validated(
    grid: Any, sample_utilities: Any, num_folds: int = 5, seed: int = 0
) -> CrossValidatedChoice:
    """Chooses λ by K-fold cross-validation on labelled samples.

    Args:
      grid: (K, N) candidate λ.
      sample_utilities: (K, S) the user's utility (e.g. a human label or the true
        reward) of the soup at grid[k] on labelled sample s.
      num_folds: folds, 2 ≤ num_folds ≤ S.
      seed: seeds the permutation of the samples.
    """
    lambdas = _as_points(grid, "grid")
    utilities = _as_points(sample_utilities, "sample_utilities")
    if utilities.shape[0] != lambdas.shape[0]:
        raise ValueError(f"sample_utilities has {utilities.shape[0]} rows but grid has {lambdas.shape[0]}.")
    n_samples = utilities.shape[1]
    if not 2 <= num_folds <= n_samples:
        raise ValueError(f"num_folds must be in [2, {n_samples}] (samples); got {num_folds}.")
    order = np.random.default_rng(seed).permutation(n_samples)
    folds = np.array_split(order, num_folds)
    held_out, choices = [], []
    for fold in folds:
        train = np.setdiff1d(order, fold)
        choice = int(np.argmax(utilities[:, train].mean(axis=1)))
        choices.append(choice)
        held_out.append(utilities[choice, fold].mean())
    index = int(np.argmax(utilities.mean(axis=1)))
    return CrossValidatedChoice(index, lambdas[index], float(np.mean(held_out)), choices)
