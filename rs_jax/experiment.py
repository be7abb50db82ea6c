"""The shared end of every experiment: results.json, lmc.json, summary.md and figures.

``rs_jax.pipeline`` evaluates the pre-trained init, the rewarded soups θ(λ) over a grid and the
MORL runs θ_μ, then hands the numbers to ``write_results``, which writes the run directory: for
every RS λ and MORL μ each reward's mean and standard error, the init, expected utility and
hypervolume of each family, the linear-mode-connectivity check and, where the points were scored
on the same samples, paired differences between each expert and its rivals on its own reward.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rs_jax import pareto, plots


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Rewards of P points (soups or MORL runs).

    Attributes:
      weights: (P, N) λ of each soup, or (P, N) μ of each MORL run.
      means: (P, R) mean reward of each point.
      stderrs: (P, R) standard error of each mean, or None.
      samples: (P, S, C) the per-sample columns the means come from (C ≥ R: rewards first,
        then auxiliary columns), or None.
    """

    weights: np.ndarray
    means: np.ndarray
    stderrs: np.ndarray | None = None
    samples: np.ndarray | None = None

    def __post_init__(self) -> None:
        weights, means = np.asarray(self.weights, float), np.asarray(self.means, float)
        if weights.ndim != 2 or means.ndim != 2 or weights.shape[0] != means.shape[0]:
            raise ValueError(f"weights (P, N) and means (P, R) disagree: {weights.shape}, {means.shape}.")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "means", means)
        if self.stderrs is not None:
            stderrs = np.asarray(self.stderrs, float)
            if stderrs.shape != means.shape:
                raise ValueError(f"stderrs {stderrs.shape} must match means {means.shape}.")
            object.__setattr__(self, "stderrs", stderrs)

    @classmethod
    def from_samples(
        cls, weights: Any, samples: Any, n_rewards: int | None = None, mask: Any = None
    ) -> Evaluation:
        """From per-sample columns (P, S, C): means and standard errors over S of the first
        ``n_rewards`` columns (default all), counting for reward r only the samples where
        ``mask[:, r]`` (S, R) is set; the samples are kept."""
        values = np.asarray(samples, dtype=np.float64)
        n_rewards = values.shape[-1] if n_rewards is None else n_rewards
        means, stderrs = mean_and_stderr(values[..., :n_rewards], axis=1, mask=mask)
        return cls(np.asarray(weights, float), means, stderrs, values)

    def take(self, rows: Sequence[int]) -> Evaluation:
        """The evaluation of these points only."""
        return Evaluation(
            self.weights[rows],
            self.means[rows],
            None if self.stderrs is None else self.stderrs[rows],
            None if self.samples is None else self.samples[rows],
        )


def mean_and_stderr(samples: Any, axis: int = 0, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (std with ddof=1 over √n) along ``axis``.

    Args:
      samples: per-sample values (P, S, R) for ``axis=1``, or any array.
      mask: (S, R) 0/1 (``axis=1``) or the shape of ``samples`` without leading axes: which
        samples count for each column; default all.
    """
    values = np.asarray(samples, dtype=np.float64)
    if values.shape[axis] == 0:
        raise ValueError("Cannot average zero samples.")
    if mask is None:
        count = values.shape[axis]
        stderr = (
            values.std(axis=axis, ddof=1) / np.sqrt(count)
            if count > 1
            else np.zeros_like(values.mean(axis=axis))
        )
        return values.mean(axis=axis), stderr
    weights = np.broadcast_to(np.asarray(mask, np.float64), values.shape)
    count = weights.sum(axis=axis)
    if np.any(count == 0):
        raise ValueError("A reward's mask selects no sample.")
    mean = (weights * values).sum(axis=axis) / count
    squares = (weights * (values - np.expand_dims(mean, axis)) ** 2).sum(axis=axis)
    stderr = np.sqrt(squares / np.maximum(count - 1, 1) / count)
    return mean, stderr


def _rewards_dict(names: Sequence[str], means: np.ndarray, stderrs: np.ndarray | None) -> dict:
    return {
        name: {"mean": float(means[j]), "stderr": None if stderrs is None else float(stderrs[j])}
        for j, name in enumerate(names)
    }


def _points(evaluation: Evaluation, names: Sequence[str], weight_key: str) -> list[dict]:
    return [
        {
            weight_key: evaluation.weights[p].tolist(),
            "rewards": _rewards_dict(
                names, evaluation.means[p], None if evaluation.stderrs is None else evaluation.stderrs[p]
            ),
        }
        for p in range(len(evaluation.weights))
    ]


def vertex_rows(points: np.ndarray, n: int, missing: Callable[[int, list[float]], str]) -> list[int]:
    """For each of the n vertices of the simplex (one-hot rows of ``np.eye(n)``), the index of the
    first row of ``points`` (K, n) at it (``np.isclose``).

    Raises:
      ValueError: with the message ``missing(i, vertex)`` of the first vertex i no row is at.
    """
    rows = []
    for i, vertex in enumerate(np.eye(n)):
        matches = np.flatnonzero(np.all(np.isclose(points, vertex), axis=1))
        if matches.size == 0:
            raise ValueError(missing(i, vertex.tolist()))
        rows.append(int(matches[0]))
    return rows


def expert_rows(grid: np.ndarray) -> list[int]:
    """Index of each vertex (one-hot λ) in a grid (K, N); ValueError if one is missing."""
    return vertex_rows(grid, grid.shape[1], lambda i, vertex: f"The RS grid lacks expert {i} (λ = {vertex}).")


def paired_specialization(
    rs: Evaluation, init: Evaluation | None, expert_names: Sequence[str], mask: Any = None
) -> list[dict[str, Any]] | None:
    """Each expert against each rival (the other experts, the init) on the expert's own reward.

    The points were scored on the same evaluation samples (prompts, scenes, episodes' starts),
    so the difference is taken per sample: its mean and its standard error, which is far
    smaller than the two points' own standard errors when the samples are correlated.

    Args:
      rs: the RS evaluation with ``samples`` (P, S, C); expert i's reward is column i.
      init: the init's evaluation with ``samples``, or None.
      mask: (S, R) which samples count for each reward (default all).

    Returns:
      One entry per (expert, rival): names, the difference's mean and standard error, and
      whether it exceeds two standard errors; None without samples.
    """
    if rs.samples is None:
        return None
    rows = expert_rows(rs.weights)
    rivals = {f"expert {name}": rs.samples[row] for name, row in zip(expert_names, rows)}
    if init is not None and init.samples is not None:
        rivals["init"] = init.samples[0]
    entries = []
    for i, (name, row) in enumerate(zip(expert_names, rows)):
        own = rs.samples[row][:, i]
        for rival, rival_samples in rivals.items():
            if rival == f"expert {name}":
                continue
            difference = (own - rival_samples[:, i])[:, None]
            column_mask = None if mask is None else np.asarray(mask)[:, i : i + 1]
            mean, stderr = mean_and_stderr(difference, axis=0, mask=column_mask)
            entries.append(
                {
                    "expert": name,
                    "reward": i,
                    "rival": rival,
                    "difference": float(mean[0]),
                    "stderr": float(stderr[0]),
                    "beyond_2_stderr": bool(mean[0] > 2.0 * stderr[0]),
                }
            )
    return entries


def _reference_point(*point_sets: np.ndarray) -> np.ndarray:
    """The worst reward over all evaluated points, minus 5% of each reward's range."""
    stacked = np.vstack([points for points in point_sets if points is not None])
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    return low - 0.05 * np.maximum(high - low, 1e-12)


def write_results(
    run_dir: str | os.PathLike,
    *,
    reward_names: Sequence[str],
    expert_names: Sequence[str],
    rs: Evaluation,
    morl: Evaluation | None = None,
    init: Evaluation | None = None,
    extra_soups: Mapping[str, Evaluation] | None = None,
    true_front: Evaluation | None = None,
    config: Mapping[str, Any] | None = None,
    lmc_tolerance: float = 0.0,
    reward_mask: Any = None,
) -> dict[str, Any]:
    """Writes results.json, lmc.json, summary.md and the figures into ``run_dir``.

    Args:
      reward_names: the R rewards.
      expert_names: the N experts (one per reward in RS).
      rs: soups over a grid that contains the N vertices (the experts themselves).
      morl: MORL runs, ``weights`` = μ.
      init: one row, the pre-trained initialization (weights are ignored).
      extra_soups: other interpolation schemes of the same experts to report beside
        RS (e.g. the Fisher soup).
      true_front: the exact Pareto front where it is known (analytic problems).
      config: the run's config, stored in results.json.
      lmc_tolerance: allowed shortfall in the LMC check (e.g. 2 standard errors).
      reward_mask: (S, R) which samples count for each reward (``paired_specialization``).

    Returns:
      The summary numbers (also in results.json under "summary").
    """
    names = list(reward_names)
    if rs.means.shape[1] != len(names) or rs.weights.shape[1] != len(expert_names):
        raise ValueError(
            f"RS has {rs.means.shape[1]} rewards and {rs.weights.shape[1]} experts; names give "
            f"{len(names)} and {len(expert_names)}."
        )
    os.makedirs(run_dir, exist_ok=True)
    vertices = expert_rows(rs.weights)
    lmc = pareto.lmc_check(rs.weights, rs.means, rs.means[vertices], tolerance=lmc_tolerance)
    reference = _reference_point(
        rs.means, None if morl is None else morl.means, None if init is None else init.means
    )
    summary: dict[str, Any] = {
        "rs_trainings": len(expert_names),
        "rs_expected_utility": pareto.expected_utility(rs.means),
        "rs_hypervolume": pareto.hypervolume(rs.means, reference),
        "hypervolume_reference": reference.tolist(),
        "lmc_holds_everywhere": lmc.holds_everywhere,
    }
    if morl is not None:
        summary |= {
            "morl_trainings": len(morl.weights),
            "morl_expected_utility": pareto.expected_utility(morl.means),
            "morl_hypervolume": pareto.hypervolume(morl.means, reference),
            "morl_runs_to_match_rs": pareto.morl_runs_to_match(rs.means, morl.means),
        }
        if init is not None:
            init_utility = pareto.expected_utility(init.means)
            summary["init_expected_utility"] = init_utility
            gain = summary["morl_expected_utility"] - init_utility
            summary["rs_efficiency"] = (
                (summary["rs_expected_utility"] - init_utility) / gain if gain != 0 else None
            )
    extra_fronts = dict(extra_soups or {})
    if true_front is not None:
        extra_fronts["true_front"] = true_front
    for name, evaluation in extra_fronts.items():
        summary[f"{name}_expected_utility"] = pareto.expected_utility(evaluation.means)
        summary[f"{name}_hypervolume"] = pareto.hypervolume(evaluation.means, reference)
    # IGD against the true front where known, else against the best front of all the run's points.
    igd_front = (
        true_front.means
        if true_front is not None
        else pareto.reference_front(
            rs.means, *(ev.means for ev in (morl, init, *extra_fronts.values()) if ev is not None)
        )
    )
    for name, evaluation in {"rs": rs, "morl": morl, **extra_fronts}.items():
        if evaluation is not None and name != "true_front":
            summary[f"{name}_igd"] = pareto.igd(evaluation.means, igd_front)

    specialization = paired_specialization(rs, init, expert_names, reward_mask)
    if specialization is not None:
        summary["experts_specialize"] = all(entry["beyond_2_stderr"] for entry in specialization)
    results: dict[str, Any] = {
        "reward_names": names,
        "expert_names": list(expert_names),
        "init": None if init is None else _points(init, names, "weights")[0]["rewards"],
        "rs": _points(rs, names, "lambda"),
        "morl": None if morl is None else _points(morl, names, "mu"),
        "extra_soups": {name: _points(ev, names, "lambda") for name, ev in (extra_soups or {}).items()},
        "true_front": None if true_front is None else _points(true_front, names, "mu"),
        "specialization": specialization,
        "summary": summary,
        "config": dict(config or {}),
    }
    if jax.process_index() != 0:  # multi-host runs: every process computed it, process 0 writes it
        return summary
    with open(os.path.join(run_dir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    with open(os.path.join(run_dir, "lmc.json"), "w") as handle:
        json.dump(lmc.to_dict(names), handle, indent=2)
    _write_figures(run_dir, names, list(expert_names), rs, morl, init, extra_fronts)
    _write_summary(run_dir, names, list(expert_names), summary, lmc, specialization)
    return summary


def _write_figures(run_dir, names, expert_names, rs, morl, init, extra_soups) -> None:
    lambdas = rs.weights[:, -1]
    # The front is drawn in the plane of the first two rewards, along the edge of the simplex between
    # the first two experts (all points when N = 2); the whole simplex is the spider map's.
    rs_edge = np.flatnonzero(np.all(np.isclose(rs.weights[:, 2:], 0.0), axis=1))
    rs_edge = rs_edge[np.argsort(rs.weights[rs_edge, 1], kind="stable")]
    morl_edge = None if morl is None else np.all(np.isclose(morl.weights[:, 2:], 0.0), axis=1)
    plots.plot_front(
        os.path.join(run_dir, "front.png"),
        rs.means[rs_edge, :2],
        rs.weights[rs_edge, 1],
        reward_names=names[:2],
        morl_points=None if morl is None else morl.means[morl_edge, :2],
        morl_mus=None if morl is None else morl.weights[morl_edge, 1].tolist(),
        init_point=None if init is None else init.means[0, :2],
        extra_fronts={name: ev.means[:, :2] for name, ev in extra_soups.items()},
        title=(
            f"Rewarded soups of {len(expert_names)} experts"
            if len(expert_names) == 2
            else f"Soups of experts {expert_names[0]} and {expert_names[1]} (all: spider.png)"
        ),
    )
    if rs.weights.shape[1] == 2:
        order = np.argsort(lambdas, kind="stable")
        plots.plot_lambda_curves(
            os.path.join(run_dir, "lambda_curves.png"),
            lambdas[order],
            rs.means[order],
            names,
            stderr=None if rs.stderrs is None else rs.stderrs[order],
        )
    if len(names) >= 3:
        series = {f"expert {name}": rs.means[row] for name, row in zip(expert_names, expert_rows(rs.weights))}
        uniform = np.argmin(np.abs(rs.weights - 1.0 / rs.weights.shape[1]).sum(axis=1))
        series[f"soup λ={np.round(rs.weights[uniform], 2).tolist()}"] = rs.means[uniform]
        if morl is not None:
            for mu, means in zip(morl.weights, morl.means):
                if not np.isclose(np.max(mu), 1.0):  # MORL at a one-hot μ is that expert, drawn above
                    series[f"MORL μ={np.round(mu, 2).tolist()}"] = means
        if init is not None:
            series["pre-trained init"] = init.means[0]
        plots.plot_spider(os.path.join(run_dir, "spider.png"), series, names)


def markdown_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: its pipes escaped (reward names like ``vx - |a|^2``)."""
    return str(text).replace("|", "\\|")


def _write_summary(run_dir, names, expert_names, summary, lmc, specialization) -> None:
    lines = [
        "# Rewarded soups vs MORL",
        "",
        f"Rewards: {', '.join(names)}. Experts: {', '.join(expert_names)}.",
        "",
        "| method | trainings | expected utility ↑ | hypervolume ↑ | IGD ↓ |",
        "|---|---|---|---|---|",
        f"| rewarded soups | {summary['rs_trainings']} | {summary['rs_expected_utility']:.4g} | "
        f"{summary['rs_hypervolume']:.4g} | {summary['rs_igd']:.4g} |",
    ]
    if "morl_trainings" in summary:
        lines.append(
            f"| MORL | {summary['morl_trainings']} | {summary['morl_expected_utility']:.4g} | "
            f"{summary['morl_hypervolume']:.4g} | {summary['morl_igd']:.4g} |"
        )
    for key in summary:
        if key.endswith("_expected_utility") and not key.startswith(("rs_", "morl_", "init_")):
            name = key.removesuffix("_expected_utility")
            trainings = (
                "— (analytic)" if name == "true_front" else f"{summary['rs_trainings']} (same experts)"
            )
            igd = summary.get(f"{name}_igd")
            lines.append(
                f"| {markdown_cell(name.replace('_', ' '))} | {trainings} | {summary[key]:.4g} | "
                f"{summary[name + '_hypervolume']:.4g} | {'—' if igd is None else f'{igd:.4g}'} |"
            )
    lines += [
        "",
        "Expected utility: E over uniform linear preferences μ of the best μ·R among the points.",
        f"Hypervolume reference point: {np.round(summary['hypervolume_reference'], 4).tolist()} "
        "(worst evaluated reward minus 5% of its range).",
        "IGD: mean distance from each point of the reference front (the true front where known, "
        "else the non-dominated points of every method of this run) to the method's nearest point.",
    ]
    if summary.get("rs_efficiency") is not None:
        lines.append(
            f"RS efficiency (EU_RS − EU_init) / (EU_MORL − EU_init): {summary['rs_efficiency']:.3f} "
            f"(EU of the init {summary['init_expected_utility']:.4g})."
        )
    if "morl_runs_to_match_rs" in summary:
        needed = summary["morl_runs_to_match_rs"]
        lines.append(
            f"MORL runs needed to match the expected utility of RS: "
            f"{needed if needed is not None else 'not reached with the runs made'}."
        )
    failing = int((~lmc.holds).sum())
    lines.append(
        f"Linear mode connectivity (Working Hypothesis 1): "
        f"{'holds at every λ' if lmc.holds_everywhere else f'fails at {failing} (λ, reward) pairs'} "
        f"(tolerance {lmc.tolerance:g}; per-λ margins in lmc.json)."
    )
    if specialization:
        lines += [
            "",
            "## Does each expert win on its own reward?",
            "",
            "Paired differences on the same evaluation samples (expert minus rival, ± standard error).",
            "",
            "| expert | its reward | rival | difference | beyond 2 s.e. |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {markdown_cell(e['expert'])} | {markdown_cell(names[e['reward']])} | "
            f"{markdown_cell(e['rival'])} | {e['difference']:.4g} ± "
            f"{e['stderr']:.2g} | {'yes' if e['beyond_2_stderr'] else 'no'} |"
            for e in specialization
        ]
    with open(os.path.join(run_dir, "summary.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
