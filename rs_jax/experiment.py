"""The shared end of every experiment: results.json, lmc.json, summary.md and figures.

Tasks evaluate the pre-trained init, the rewarded soups θ(λ) over a grid and
the MORL runs θ_μ, then hand the numbers to ``write_results``, which writes the
run directory described in ../shared/DESIGN.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rs_jax import checkpoint, distributed, pareto, plots, soup
from rs_jax.train import trainer


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Rewards of P points (soups or MORL runs).

    Attributes:
      weights: (P, N) λ of each soup, or (P, N) μ of each MORL run.
      means: (P, R) mean reward of each point.
      stderrs: (P, R) standard error of each mean, or None.
    """

    weights: np.ndarray
    means: np.ndarray
    stderrs: np.ndarray | None = None

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
    def from_samples(cls, weights: Any, samples: Any) -> Evaluation:
        """From per-sample rewards (P, S, R): means and standard errors over S."""
        means, stderrs = mean_and_stderr(samples, axis=1)
        return cls(np.asarray(weights, float), means, stderrs)


def mean_and_stderr(samples: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (std with ddof=1 over √n) along ``axis``."""
    values = np.asarray(samples, dtype=np.float64)
    count = values.shape[axis]
    if count == 0:
        raise ValueError("Cannot average zero samples.")
    stderr = (
        values.std(axis=axis, ddof=1) / np.sqrt(count) if count > 1 else np.zeros_like(values.mean(axis=axis))
    )
    return values.mean(axis=axis), stderr


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


def expert_rows(grid: np.ndarray) -> list[int]:
    """Index of each vertex (one-hot λ) in a grid (K, N); ValueError if one is missing."""
    rows = []
    for i in range(grid.shape[1]):
        vertex = np.eye(grid.shape[1])[i]
        matches = np.flatnonzero(np.all(np.isclose(grid, vertex), axis=1))
        if matches.size == 0:
            raise ValueError(f"The RS grid lacks expert {i} (λ = {vertex.tolist()}).")
        rows.append(int(matches[0]))
    return rows


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
    extra_fronts = dict(extra_soups or {})
    if true_front is not None:
        extra_fronts["true_front"] = true_front
    for name, evaluation in extra_fronts.items():
        summary[f"{name}_expected_utility"] = pareto.expected_utility(evaluation.means)
        summary[f"{name}_hypervolume"] = pareto.hypervolume(evaluation.means, reference)

    results: dict[str, Any] = {
        "reward_names": names,
        "expert_names": list(expert_names),
        "init": None if init is None else _points(init, names, "weights")[0]["rewards"],
        "rs": _points(rs, names, "lambda"),
        "morl": None if morl is None else _points(morl, names, "mu"),
        "extra_soups": {name: _points(ev, names, "lambda") for name, ev in (extra_soups or {}).items()},
        "true_front": None if true_front is None else _points(true_front, names, "mu"),
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
    _write_summary(run_dir, names, list(expert_names), summary, lmc)
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


def _write_summary(run_dir, names, expert_names, summary, lmc) -> None:
    lines = [
        "# Rewarded soups vs MORL",
        "",
        f"Rewards: {', '.join(names)}. Experts: {', '.join(expert_names)}.",
        "",
        "| method | trainings | expected utility ↑ | hypervolume ↑ |",
        "|---|---|---|---|",
        f"| rewarded soups | {summary['rs_trainings']} | {summary['rs_expected_utility']:.4g} | "
        f"{summary['rs_hypervolume']:.4g} |",
    ]
    if "morl_trainings" in summary:
        lines.append(
            f"| MORL | {summary['morl_trainings']} | {summary['morl_expected_utility']:.4g} | "
            f"{summary['morl_hypervolume']:.4g} |"
        )
    for key in summary:
        if key.endswith("_expected_utility") and not key.startswith(("rs_", "morl_")):
            name = key.removesuffix("_expected_utility")
            trainings = (
                "— (analytic)" if name == "true_front" else f"{summary['rs_trainings']} (same experts)"
            )
            lines.append(
                f"| {name.replace('_', ' ')} | {trainings} | {summary[key]:.4g} | "
                f"{summary[name + '_hypervolume']:.4g} |"
            )
    lines += [
        "",
        "Expected utility: E over uniform linear preferences μ of the best μ·R among the points.",
        f"Hypervolume reference point: {np.round(summary['hypervolume_reference'], 4).tolist()} "
        "(worst evaluated reward minus 5% of its range).",
    ]
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
    with open(os.path.join(run_dir, "summary.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- the RL pipeline


@dataclasses.dataclass(frozen=True)
class RLExperiment:
    """What a reinforcement-learning task declares; ``run_rl_experiment`` does the rest.

    Rewards are ``weights · components`` of the learner's reward components, so
    pre-training, every expert and every MORL μ differ only in their weights.

    Attributes:
      reward_names: the R rewards evaluated (e.g. ("risky", "cautious")).
      expert_names: the N experts, one per reward.
      pretrain_learner / finetune_learner: learners of ``rs_jax.train.trainer``.
      init_params: key -> params of a fresh model.
      init_carry: (learner, key) -> the learner's carry.
      finetune_start: (pretrained params, pretrained carry, key) -> (params, carry) of a
        fine-tuning run (e.g. keep the policy, new value head, frozen statistics).
      soup_part: params -> the sub-tree that is interpolated (e.g. the policy).
      evaluate: (soup part, pretrained carry, key) -> (episodes, R) rewards; a callable pytree
        (e.g. a ``jax.tree_util.Partial``) keeps the arrays it holds operands of the sweep.
      pretrain_weights: (C,) component weights of the pre-training reward.
      run_weights: (M, C) component weights of each fine-tuning run.
      run_mus: (M, N) μ of each run over the N rewards (one-hot rows are the experts).
    """

    reward_names: tuple[str, ...]
    expert_names: tuple[str, ...]
    pretrain_learner: Any
    finetune_learner: Any
    init_params: Any
    init_carry: Any
    finetune_start: Any
    soup_part: Any
    evaluate: Any
    pretrain_weights: Any
    run_weights: Any
    run_mus: Any


@dataclasses.dataclass(frozen=True)
class Budget:
    """Updates, optimizer and bookkeeping of the two training phases."""

    pretrain_updates: int
    finetune_updates: int
    pretrain_optimizer: Any
    finetune_optimizer: Any
    num_epochs: int
    num_minibatches: int
    checkpoint_every: int
    rs_points: int
    seed: int
    pretrain_num_epochs: int | None = None  # None: as fine-tuning
    pretrain_num_minibatches: int | None = None

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> Budget:
        """The budget of a task config with the usual fields (``pretrain_updates``,
        ``finetune_updates``, ``pretrain_learning_rate``, ``finetune_learning_rate``,
        ``max_grad_norm``, ``num_epochs``, ``num_minibatches``, ``checkpoint_every``, ``rs_points``,
        ``seed``): Adam after global-norm clipping in both phases; ``overrides`` set other fields."""

        def optimizer(learning_rate: float) -> optax.GradientTransformation:
            return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate))

        fields = {
            "pretrain_updates": config.pretrain_updates,
            "finetune_updates": config.finetune_updates,
            "pretrain_optimizer": optimizer(config.pretrain_learning_rate),
            "finetune_optimizer": optimizer(config.finetune_learning_rate),
            "num_epochs": config.num_epochs,
            "num_minibatches": config.num_minibatches,
            "checkpoint_every": config.checkpoint_every,
            "rs_points": config.rs_points,
            "seed": config.seed,
        }
        return cls(**(fields | overrides))


def phase_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The (pre-training, fine-tuning, evaluation) keys of a run with this seed."""
    pretrain_key, finetune_key, eval_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    return pretrain_key, finetune_key, eval_key


@dataclasses.dataclass(frozen=True)
class TrainedRuns:
    """What ``train_runs`` leaves for evaluation.

    Attributes:
      pretrained_params / pretrained_carry: the pre-training's final params and carry.
      runs: the M fine-tuned soup parts (params trees), in the order of ``run_mus``.
      mus: (M, N) μ of each run over the N rewards.
      expert_indices: for each of the N experts, its index in ``runs``.
      init: the soup part every run starts from (its first fine-tuning start).
    """

    pretrained_params: Any
    pretrained_carry: Any
    runs: list[Any]
    mus: np.ndarray
    expert_indices: list[int]
    init: Any


def start_run(run_dir: str, config: Mapping[str, Any], *, resume: bool = False) -> None:
    """Creates ``run_dir`` with its config.json; refuses one that already holds a run unless resuming.

    Raises:
      ValueError: ``run_dir`` already holds a run and ``resume`` is False.
    """
    if not resume and any(os.path.exists(os.path.join(run_dir, phase)) for phase in ("pretrain", "finetune")):
        raise ValueError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose a new --out."
        )
    os.makedirs(run_dir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(run_dir, "config.json"), "w") as handle:
            json.dump(dict(config), handle, indent=2)


def pretrain(
    run_dir: str, experiment: RLExperiment, budget: Budget, *, resume: bool = False, shard: bool = False
) -> tuple[Any, Any]:
    """The pre-training phase (checkpointed in ``run_dir/pretrain``); returns (params, carry).

    With ``shard``, the batch is split over every visible device (``data`` axis).
    """
    pretrain_key, _, _ = phase_keys(budget.seed)
    mesh = distributed.mesh_for_runs(1) if shard else None
    pretrain_update = trainer.make_update(
        experiment.pretrain_learner,
        budget.pretrain_optimizer,
        budget.pretrain_num_epochs or budget.num_epochs,
        budget.pretrain_num_minibatches or budget.num_minibatches,
        mesh=mesh,
    )
    params = experiment.init_params(pretrain_key)
    carry = experiment.init_carry(experiment.pretrain_learner, pretrain_key)
    state = trainer.init_state(params, budget.pretrain_optimizer, carry, budget.seed)
    state, _ = trainer.fit(
        pretrain_update,
        state,
        jnp.asarray(experiment.pretrain_weights, jnp.float32),
        budget.pretrain_updates,
        run_dir=os.path.join(run_dir, "pretrain"),
        checkpoint_every=budget.checkpoint_every,
        resume=resume,
        progress="pre-training",
        mesh=mesh,
    )
    return state.params, state.carry


def train_runs(
    run_dir: str,
    experiment: RLExperiment,
    budget: Budget,
    *,
    config: Mapping[str, Any],
    resume: bool = False,
    shard: bool = False,
) -> TrainedRuns:
    """``start_run``, ``pretrain`` and ``finetune``.

    Raises:
      ValueError: ``run_dir`` already holds a run and ``resume`` is False.
    """
    start_run(run_dir, config, resume=resume)
    pretrained_params, pretrained_carry = pretrain(run_dir, experiment, budget, resume=resume, shard=shard)
    return finetune(
        run_dir, experiment, budget, pretrained_params, pretrained_carry, resume=resume, shard=shard
    )


def finetune(
    run_dir: str,
    experiment: RLExperiment,
    budget: Budget,
    pretrained_params: Any,
    pretrained_carry: Any,
    *,
    resume: bool = False,
    shard: bool = False,
) -> TrainedRuns:
    """Fine-tunes all M runs vmapped in one program (``run_dir/finetune``) and saves the N experts.

    Every run starts from ``experiment.finetune_start(pretrained params, carry, run key)``; the
    soup part of the first start is the shared initialization ("init") of the soups. With
    ``shard``, the runs are split over the devices' ``expert`` axis and each batch over ``data``
    (``distributed.mesh_for_runs``).
    """
    _, finetune_key, _ = phase_keys(budget.seed)
    run_weights = jnp.asarray(experiment.run_weights, jnp.float32)
    starts = [
        experiment.finetune_start(pretrained_params, pretrained_carry, run_key)
        for run_key in jax.random.split(finetune_key, run_weights.shape[0])
    ]
    states = [
        trainer.init_state(run_params, budget.finetune_optimizer, run_carry, budget.seed + 1 + index)
        for index, (run_params, run_carry) in enumerate(starts)
    ]
    stacked = trainer.stack_states(states)
    mesh = distributed.mesh_for_runs(len(states)) if shard else None
    finetune_update = trainer.make_update(
        experiment.finetune_learner,
        budget.finetune_optimizer,
        budget.num_epochs,
        budget.num_minibatches,
        mesh=mesh,
    )
    stacked, _ = trainer.fit(
        finetune_update,
        stacked,
        run_weights,
        budget.finetune_updates,
        run_dir=os.path.join(run_dir, "finetune"),
        checkpoint_every=budget.checkpoint_every,
        resume=resume,
        vmapped=True,
        progress=f"fine-tuning {run_weights.shape[0]} runs (vmapped)",
        mesh=mesh,
    )
    runs = [
        experiment.soup_part(jax.tree.map(lambda leaf, i=i: leaf[i], stacked.params))
        for i in range(len(states))
    ]
    init = experiment.soup_part(starts[0][0])

    base_id = "pretrained@" + checkpoint.fingerprint(init)[:16]
    mus = np.asarray(experiment.run_mus, np.float64)
    expert_indices = []
    for name, vertex in zip(experiment.expert_names, np.eye(len(experiment.expert_names))):
        matches = np.flatnonzero(np.all(np.isclose(mus, vertex), axis=1))
        if matches.size == 0:
            raise ValueError(f"No fine-tuning run has μ = {vertex.tolist()} (the {name!r} expert).")
        index = int(matches[0])
        expert_indices.append(index)
        directory = os.path.join(run_dir, "experts", name)
        if checkpoint.latest_step(directory) is None:
            checkpoint.save_expert(
                directory,
                runs[index],
                reward=name,
                base_model=base_id,
                step=budget.finetune_updates,
                config={"mu": vertex.tolist()},
            )
    return TrainedRuns(pretrained_params, pretrained_carry, runs, mus, expert_indices, init)


def figure_soups(
    trained: TrainedRuns, names: Sequence[str], lambdas: Sequence[float] = (0.0, 0.5, 1.0)
) -> dict[str, Any]:
    """The params drawn in a task's sample figure: ``init``, the soups of the first two experts at
    ``lambdas`` (weight of the second; outside [0, 1] extrapolates), labelled ``λ=…`` (with the two
    experts' ``names`` when there are more), then for N ≥ 3 the other experts and the ``uniform soup``."""
    experts = [trained.runs[index] for index in trained.expert_indices]
    members = {"init": trained.init}
    for lam in lambdas:
        label = f"λ={lam:g}"
        if len(experts) > 2:
            label += f": {1 - lam:g}·{names[0]} + {lam:g}·{names[1]}"
        members[label] = soup.interpolate(experts[:2], [1.0 - lam, lam], allow_extrapolation=True)
    if len(experts) > 2:
        members |= {f"expert {name}": expert for name, expert in zip(names[2:], experts[2:])}
        members["uniform soup"] = soup.interpolate(experts, np.full(len(experts), 1.0 / len(experts)))
    return members


def _evaluate_soup(evaluate: Any, carry: Any, key: jax.Array, soup_params: Any) -> jax.Array:
    return evaluate(soup_params, carry, key)


def bind_evaluation(evaluate: Any, carry: Any, key: jax.Array) -> jax.tree_util.Partial:
    """``soup part -> evaluate(soup part, carry, key)`` as a callable pytree for ``evaluate_runs``.

    Its leaves are the carry's arrays, the key and whatever arrays ``evaluate`` holds (when it
    is itself a pytree, e.g. a ``jax.tree_util.Partial`` over a learner with a frozen base), so
    the compiled sweep takes them as operands instead of embedding them as constants.
    """
    return jax.tree_util.Partial(_evaluate_soup, evaluate, carry, key)


def evaluate_runs(
    trained: TrainedRuns,
    eval_fn: Any,
    rs_points: int,
    extra_soups: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[Evaluation, Evaluation, Evaluation, dict[str, Evaluation]]:
    """RS soups over a simplex grid, every run, the init and any extra soups, in ONE compiled sweep.

    The sweep's members are ``[*trained.runs, trained.init]`` (M + 1 of them).

    Args:
      eval_fn: soup part -> (S, R) per-sample rewards; a callable pytree (``bind_evaluation``)
        passes its arrays to the compiled sweep as operands.
      rs_points: points per edge of the RS simplex grid over the N experts.
      extra_soups: name -> (labels (P, n), member weights (P, M + 1)): other combinations of the
        members (model soups of seeds, λ outside [0, 1], …); rows must sum to 1.

    Returns:
      (rs, morl, init, extras) evaluations; ``extras`` has the labels as weights.
    """
    members = [*trained.runs, trained.init]
    grid = soup.simplex_grid(len(trained.expert_indices), rs_points)
    embedded = np.zeros((len(grid), len(members)))
    embedded[:, trained.expert_indices] = grid
    blocks = {"rs": embedded, "runs": np.eye(len(members))[:-1], "init": np.eye(len(members))[-1:]}
    for name, (_, member_weights) in (extra_soups or {}).items():
        member_weights = np.asarray(member_weights, np.float64)
        if member_weights.ndim != 2 or member_weights.shape[1] != len(members):
            raise ValueError(
                f"extra soup {name!r}: member weights must be (P, {len(members)}); "
                f"got {member_weights.shape}."
            )
        blocks[f"extra:{name}"] = member_weights
    samples = np.asarray(
        soup.sweep(eval_fn, members, np.vstack(list(blocks.values())), allow_extrapolation=True)
    )
    split = dict(zip(blocks, np.split(samples, np.cumsum([len(b) for b in blocks.values()])[:-1])))
    extras = {
        name: Evaluation.from_samples(labels, split[f"extra:{name}"])
        for name, (labels, _) in (extra_soups or {}).items()
    }
    init_weights = np.full((1, len(trained.expert_indices)), np.nan)
    return (
        Evaluation.from_samples(grid, split["rs"]),
        Evaluation.from_samples(trained.mus, split["runs"]),
        Evaluation.from_samples(init_weights, split["init"]),
        extras,
    )


def run_rl_experiment(
    run_dir: str,
    experiment: RLExperiment,
    budget: Budget,
    *,
    config: Mapping[str, Any],
    resume: bool = False,
    shard: bool = False,
) -> dict[str, Any]:
    """``train_runs``, then ``evaluate_runs``, then ``write_results``: the whole run directory."""
    trained = train_runs(run_dir, experiment, budget, config=config, resume=resume, shard=shard)
    _, _, eval_key = phase_keys(budget.seed)
    eval_fn = bind_evaluation(experiment.evaluate, trained.pretrained_carry, eval_key)
    rs, morl, init, _ = evaluate_runs(trained, eval_fn, budget.rs_points)
    return write_results(
        run_dir,
        reward_names=experiment.reward_names,
        expert_names=experiment.expert_names,
        rs=rs,
        morl=morl,
        init=init,
        config=config,
        lmc_tolerance=2.0 * float(rs.stderrs.max()),  # evaluation noise: two standard errors
    )
