"""One trainer for every learner: a pure, jitted update and a host loop around it.

A learner supplies two pure functions:

* ``collect(params, carry, reward_weights, key) -> (batch, carry, metrics)``:
  gathers experience (rollouts, sampled captions, …) for the reward
  ``reward_weights · components`` and computes its advantages; ``batch`` is a
  pytree whose leaves share a leading axis B; ``carry`` is whatever the learner
  keeps between updates (environment states, observation statistics).
* ``loss(params, minibatch, key) -> (loss, metrics)``.

A learner may also supply ``collect_runs(params, carry, reward_weights, keys)``: the same
as ``jax.vmap(collect)`` over M runs (every argument and result with a leading axis M),
computed its own way; ``fit(..., vmapped=True)`` then runs it instead of vmapping
``collect`` (PPO steps the M runs' environments as one batch of M·E envs, see
``ppo.PPOLearner.collect_runs``). The epochs of optax steps stay vmapped over the runs.

``make_update`` turns them into ``update(state, reward_weights) -> (state,
metrics)`` — collect, then epochs × shuffled minibatches of optax steps, all
one ``lax.scan`` program — so ``jax.vmap(update)`` over a batch of states and
reward weights trains several experts (or several MORL μ) in one compiled
program. ``fit`` runs it with a progress bar, JSONL metrics, orbax checkpoints
and exact resume.

Frozen arrays: a learner may be a registered pytree (e.g. ``lm_ppo.LMPPOLearner``,
whose leaves are the frozen base LM). ``update`` is a ``jax.tree_util.Partial`` over
the learner's arrays, and ``step_function`` (what ``fit`` runs) takes it as an
argument, so they are operands of the compiled program — replicated by a mesh, shared
by the runs of a vmap — rather than constants baked into it (``rs_jax.operands``). A
learner that is a plain dataclass holds no arrays and compiles as before.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh
from tqdm.auto import tqdm

from rs_jax import distributed, failures, operands

PyTree = Any
Metrics = dict[str, jax.Array]


class TrainState(NamedTuple):
    """Everything a training run carries between updates.

    Attributes:
      params: the learner's trainable params.
      opt_state: the optax state.
      carry: the learner's own state (e.g. environment states, observation statistics).
      rng: base PRNG key (raw uint32[2]); the key of update t is ``fold_in(rng, t)``.
      step: () int32, number of updates done.
    """

    params: PyTree
    opt_state: PyTree
    carry: PyTree
    rng: jax.Array
    step: jax.Array


class Learner(Protocol):
    """``collect`` and ``loss`` (see the module docstring); ``collect_runs`` is optional."""

    def collect(
        self, params: PyTree, carry: PyTree, reward_weights: jax.Array, key: jax.Array
    ) -> tuple[PyTree, PyTree, Metrics]: ...

    def loss(self, params: PyTree, minibatch: PyTree, key: jax.Array) -> tuple[jax.Array, Metrics]: ...


class DivergenceError(RuntimeError):
    """An update broke a ``HealthBounds`` bound; the run stopped before saving anything from it."""


class NonFiniteError(DivergenceError):
    """A metric became NaN or infinite; the run stopped before saving anything from that update."""


@dataclasses.dataclass(frozen=True)
class HealthBounds:
    """What ``fit`` counts as a healthy update, besides every metric being finite.

    Attributes:
      max_abs_loss: bound on ``|loss|`` (the mean minibatch loss of the update).
      max_kl: bound on every metric named ``kl`` or ending in ``_kl`` (nats).
      max_param_norm: bound on the global L2 norm of the params after the update (per run).

    The defaults sit orders of magnitude above healthy runs and below diverged ones. Measured on
    the smoke presets (2-core CPU, seed 0), largest over every update and run: locomotion
    |loss| 6.5, params' norm 7.5 (all runs together); text |loss| 5.6, kl 0.003, norm 7.3;
    captioning |loss| 4.3, norm 34; diffusion |loss| 1.9, norm 173; grounding |loss| 7.2,
    norm 41. Adam with a step size of 1e10 moves every weight by ~1e10 in one update.
    """

    max_abs_loss: float = 1e8
    max_kl: float = 1e4
    max_param_norm: float = 1e7

    def violation(self, metrics: dict[str, np.ndarray], param_norm: np.ndarray) -> str | None:
        """Says which metric is unhealthy (its name, value and bound), or None if all are healthy."""
        for name, value in metrics.items():
            if not np.all(np.isfinite(value)):
                return f"metric {name!r} is not finite ({value.tolist()})"
        checks = [("loss", metrics.get("loss"), self.max_abs_loss, "|loss|")]
        checks += [
            (name, value, self.max_kl, name)
            for name, value in metrics.items()
            if name == "kl" or name.endswith("_kl")
        ]
        checks.append(("param_norm", param_norm, self.max_param_norm, "the params' global norm"))
        for _, value, bound, label in checks:
            if value is not None and np.any(np.abs(value) > bound):
                return f"{label} = {np.abs(value).tolist()} exceeds its bound {bound:g}"
        return None


def init_state(
    params: PyTree, optimizer: optax.GradientTransformation, carry: PyTree, seed: int
) -> TrainState:
    """A fresh TrainState at step 0."""
    return TrainState(
        params, optimizer.init(params), carry, jax.random.PRNGKey(seed), jnp.zeros((), jnp.int32)
    )


def stack_states(states: list[TrainState]) -> TrainState:
    """Stacks M TrainStates (any leaves: env states, step counters) for ``fit(..., vmapped=True)``."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def _strongly_typed(tree: PyTree) -> PyTree:
    """``tree`` with each weakly typed array leaf made strongly typed (same dtype).

    A state fed back into the compiled update must keep its signature: brax's training wrappers
    return some ``info`` fields weakly typed from ``step`` but not from ``reset`` (and the reward
    the other way round), which compiled the update a second time at the second update.
    """
    return jax.tree.map(lambda leaf: leaf.astype(leaf.dtype) if jax.typeof(leaf).weak_type else leaf, tree)


def _scan(body: Callable, carry: Any, inputs: Any) -> tuple[Any, Any]:
    """``jax.lax.scan(body, carry, inputs)``, but a length-1 scan is one direct call of ``body``.

    Even unrolled, a scan stays a while loop, and XLA:CPU computes convolution gradients far slower
    inside one (jax-ml/jax#12868): a whole diffusion UNet update took 1.9 s instead of 0.16 s
    (jax 0.9.2, 2 CPU cores).
    """
    if jax.tree.leaves(inputs)[0].shape[0] != 1:
        return jax.lax.scan(body, carry, inputs)
    carry, outputs = body(carry, jax.tree.map(lambda leaf: leaf[0], inputs))
    return carry, jax.tree.map(lambda leaf: leaf[None], outputs)


def make_update(
    learner: Learner,
    optimizer: optax.GradientTransformation,
    num_epochs: int,
    num_minibatches: int,
    *,
    mesh: Mesh | None = None,
) -> jax.tree_util.Partial:
    """Builds the pure update ``(state, reward_weights) -> (state, metrics)``.

    Metrics are means over the update's minibatches (loss terms) plus the
    learner's collect metrics.

    Args:
      learner: supplies ``collect`` and ``loss``; its array leaves, if it is a pytree,
        become the update's operands (see the module docstring).
      optimizer: the optax transformation.
      num_epochs: passes over each collected batch.
      num_minibatches: optax steps per epoch; must divide the batch size B.
      mesh: data parallelism: the collected batch's leading axis B is split over
        the mesh's ``data`` axis (B must be a multiple of its size); XLA then
        all-reduces the gradients. Pass the same mesh to ``fit``.

    Returns:
      ``update`` as a ``jax.tree_util.Partial`` whose leaves are the learner's arrays:
      jit it through ``step_function`` (or ``operands.jit``), not ``jax.jit(update)``,
      which would embed them as constants.
    """
    split_batch = mesh is not None and distributed.axis_size(mesh, distributed.DATA) > 1
    frozen, skeleton = operands.split(learner)

    def minibatch_step(learner, carry, inputs):
        params, opt_state = carry
        minibatch, key = inputs
        (loss, metrics), grads = jax.value_and_grad(learner.loss, has_aux=True)(params, minibatch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss, **metrics}

    def epoch(learner, carry, key, batch):
        shuffle_key, loss_key = jax.random.split(key)
        size = jax.tree.leaves(batch)[0].shape[0]
        order = jax.random.permutation(shuffle_key, size)
        minibatches = jax.tree.map(
            lambda leaf: leaf[order].reshape((num_minibatches, size // num_minibatches, *leaf.shape[1:])),
            batch,
        )
        return _scan(
            functools.partial(minibatch_step, learner),
            carry,
            (minibatches, jax.random.split(loss_key, num_minibatches)),
        )

    def update_keys(state: TrainState) -> jax.Array:
        """(2, key) the collect and epochs keys of the state's next update."""
        return jax.random.split(jax.random.fold_in(state.rng, state.step))

    def optimize(
        learner: Learner,
        state: TrainState,
        batch: PyTree,
        carry: PyTree,
        collect_metrics: Metrics,
        epochs_key: jax.Array,
    ) -> tuple[TrainState, Metrics]:
        """The epochs of minibatch steps on one run's collected ``batch``."""
        size = jax.tree.leaves(batch)[0].shape[0]
        if size == 0:
            raise ValueError(
                "The learner collected an empty batch (0 rows): is its dataset or environment batch empty?"
            )
        if size % num_minibatches:
            raise ValueError(f"The batch of {size} does not split into {num_minibatches} minibatches.")
        if split_batch:
            batch = distributed.constrain_leading(batch, mesh, distributed.DATA)
        (params, opt_state), loss_metrics = _scan(
            lambda c, k: epoch(learner, c, k, batch),
            (state.params, state.opt_state),
            jax.random.split(epochs_key, num_epochs),
        )
        metrics = {**jax.tree.map(jnp.mean, loss_metrics), **collect_metrics}
        return _strongly_typed(TrainState(params, opt_state, carry, state.rng, state.step + 1)), metrics

    def update(
        frozen: list[jax.Array], state: TrainState, reward_weights: jax.Array
    ) -> tuple[TrainState, Metrics]:
        learner = skeleton.merge(frozen)
        collect_key, epochs_key = update_keys(state)
        batch, carry, collect_metrics = learner.collect(
            state.params, state.carry, reward_weights, collect_key
        )
        return optimize(learner, state, batch, carry, collect_metrics, epochs_key)

    def update_runs(
        frozen: list[jax.Array], states: TrainState, reward_weights: jax.Array, expert_axis: str | None
    ) -> tuple[TrainState, Metrics]:
        learner = skeleton.merge(frozen)
        keys = jax.vmap(update_keys)(states)
        batch, carry, collect_metrics = learner.collect_runs(
            states.params, states.carry, reward_weights, keys[:, 0]
        )
        return jax.vmap(functools.partial(optimize, learner), spmd_axis_name=expert_axis)(
            states, batch, carry, collect_metrics, keys[:, 1]
        )

    runs = update_runs if callable(getattr(learner, "collect_runs", None)) else None
    return jax.tree_util.Partial(_Update(update, runs), frozen)


@dataclasses.dataclass(frozen=True, eq=False)
class _Update:
    """The function of ``make_update``'s Partial: one run, and M runs when the learner has ``collect_runs``.

    Attributes:
      one: ``(frozen, state, reward_weights) -> (state, metrics)``.
      runs: ``(frozen, states, reward_weights, expert_axis) -> (states, metrics)`` over a leading
        axis M, or None (``fit`` then vmaps ``one``).
    """

    one: Callable[..., tuple[TrainState, Metrics]]
    runs: Callable[..., tuple[TrainState, Metrics]] | None

    def __call__(self, *args: Any) -> tuple[TrainState, Metrics]:
        return self.one(*args)


def _apply_update(
    update: jax.tree_util.Partial, state: TrainState, reward_weights: jax.Array
) -> tuple[TrainState, Metrics]:
    """``update(state, reward_weights)``, with ``update`` (from ``make_update``) an argument."""
    return update(state, reward_weights)


def _apply_update_runs(
    update: jax.tree_util.Partial, states: TrainState, reward_weights: jax.Array, expert_axis: str | None
) -> tuple[TrainState, Metrics]:
    """M runs of ``update``: its learner's ``collect_runs`` path if it has one, else a vmap of ``update``."""
    runs = getattr(update.func, "runs", None)
    if runs is None:
        return jax.vmap(_apply_update, in_axes=(None, 0, 0), spmd_axis_name=expert_axis)(
            update, states, reward_weights
        )
    return runs(*update.args, states, reward_weights, expert_axis)


@functools.lru_cache(maxsize=4)
def step_function(vmapped: bool = False, expert_axis: str | None = None) -> Callable:
    """The compiled ``(update, state, reward_weights) -> (state, metrics)`` that ``fit`` runs.

    ``update``'s arrays (the learner's frozen weights) are operands, shared by the M runs when
    ``vmapped`` (state leaves and reward weights then have a leading axis M, split over the
    mesh axis ``expert_axis`` if given; a learner's ``collect_runs`` replaces the vmapped
    ``collect``). The state is donated. jit caches one program per
    ``update``, so fitting the same update again (e.g. resuming in the same process) does not
    recompile.
    """
    step = _apply_update
    if vmapped:
        step = functools.partial(_apply_update_runs, expert_axis=expert_axis)
    return jax.jit(step, donate_argnums=1)


def _checkpoint_manager(directory: str) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


@functools.lru_cache(maxsize=2)
def _param_norms(vmapped: bool) -> Callable[[PyTree], jax.Array]:
    """Compiled global L2 norm of the params: () or, with ``vmapped``, (M,) one per run."""

    def norm(params: PyTree) -> jax.Array:
        return jnp.sqrt(
            sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(params))
        )

    return jax.jit(jax.vmap(norm) if vmapped else norm)


def _diverged(update: int, problem: str, manager: ocp.CheckpointManager | None) -> DivergenceError:
    """The error for an unhealthy update, naming the last healthy checkpoint (saves are finished first)."""
    kind = NonFiniteError if "not finite" in problem else DivergenceError
    if manager is None:
        return kind(f"Update {update}: {problem}; stopped (no checkpoints are kept without a run_dir).")
    manager.wait_until_finished()
    last = manager.latest_step()
    where = os.fspath(manager.directory)
    manager.close()
    kept = (
        f"the last healthy checkpoint, {where}/{last}, is kept"
        if last is not None
        else f"no checkpoint was saved before it in {where}"
    )
    return kind(f"Update {update}: {problem}; stopped, {kept}.")


def fit(
    update: Callable[[TrainState, jax.Array], tuple[TrainState, Metrics]],
    state: TrainState,
    reward_weights: jax.Array,
    num_updates: int,
    *,
    run_dir: str | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    vmapped: bool = False,
    progress: str | None = None,
    live_metric: str = "reward",
    mesh: Mesh | None = None,
    health: HealthBounds = HealthBounds(),
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Runs ``update`` until ``state.step == num_updates``.

    Args:
      update: from ``make_update``.
      state: initial state (with ``vmapped``, every leaf has a leading axis M).
      reward_weights: (C,) weights of the reward components, or (M, C) with ``vmapped``.
      num_updates: target number of updates.
      run_dir: where ``metrics.jsonl`` and ``checkpoints/`` go (None: keep nothing on disk).
      checkpoint_every: save every this many updates and at the end (0: only at the end).
      resume: continue from the latest checkpoint in ``run_dir`` if one exists; the
        result equals an uninterrupted run's (per-update keys are ``fold_in(rng, step)``).
      vmapped: train M runs at once, ``jax.vmap`` over state and reward weights.
      progress: description of a tqdm bar (None: no bar).
      live_metric: metric shown on the bar.
      mesh: place the run on a device mesh (``distributed.make_mesh``). With
        ``vmapped`` the M runs are split over its ``expert`` axis (M must be a
        multiple of its size); otherwise the state is replicated. The update's frozen
        arrays are replicated either way. Batches are split
        over ``data`` when ``make_update`` got the same mesh. Across hosts, only
        process 0 writes ``metrics.jsonl`` and shows the bar; orbax coordinates
        the checkpoint.
      health: bounds an update must respect (``HealthBounds``); the first update that breaks
        one stops the run before its state is saved or its metrics are logged, so every
        checkpoint kept holds the state after a healthy update.

    Returns:
      The final state and the metrics of the updates run in this call (host floats).

    Raises:
      NonFiniteError: a metric became NaN/inf; DivergenceError: another bound was broken. The
        message names the update, the metric, and the last healthy checkpoint kept (or that
        there is none).
      ValueError: ``update`` is not a ``jax.tree_util.Partial`` (what ``make_update`` returns),
        an unreadable checkpoint or ``metrics.jsonl`` on resume.
    """
    if not isinstance(update, jax.tree_util.Partial):
        raise ValueError(
            f"fit needs the update that trainer.make_update returns (a jax.tree_util.Partial), got "
            f"{type(update).__name__}; wrap your own update(state, reward_weights) as "
            "jax.tree_util.Partial(update)."
        )
    step_fn = step_function(vmapped, distributed.EXPERT if mesh is not None else None)
    lead = jax.process_index() == 0
    manager = _checkpoint_manager(os.path.join(run_dir, "checkpoints")) if run_dir else None
    metrics_path = os.path.join(run_dir, "metrics.jsonl") if run_dir and lead else None
    if mesh is not None:
        update = distributed.replicate(update, mesh)
        if vmapped:
            state, reward_weights = distributed.shard_leading((state, reward_weights), mesh)
        else:
            state, reward_weights = distributed.replicate((state, reward_weights), mesh)
    if manager is not None and resume and manager.latest_step() is not None:
        state = _restore(manager, state, os.path.join(run_dir, "checkpoints"))
    state = _strongly_typed(jax.tree.map(jnp.array, state))  # own every buffer: donation fails on shared ones
    start = int(np.max(distributed.to_host(state.step)))
    if metrics_path is not None:
        _truncate_metrics(metrics_path, start)
    history: list[dict[str, Any]] = []
    bar = tqdm(
        total=num_updates,
        initial=start,
        desc=progress,
        disable=progress is None or not lead,
        dynamic_ncols=True,
    )
    norms = _param_norms(vmapped)
    for update_index in range(start, num_updates):
        state, metrics = step_fn(update, state, reward_weights)
        host = {name: np.asarray(value) for name, value in distributed.to_host(metrics).items()}
        problem = health.violation(host, np.asarray(distributed.to_host(norms(state.params))))
        if problem is not None:
            bar.close()
            raise _diverged(update_index + 1, problem, manager)
        record = {"update": update_index + 1, **{k: v.tolist() for k, v in host.items()}}
        history.append(record)
        if metrics_path is not None:
            with open(metrics_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if live_metric in host:
            bar.set_postfix({live_metric: np.array2string(host[live_metric], precision=3)})
        bar.update(1)
        done = update_index + 1
        if manager is not None and (
            done == num_updates or (checkpoint_every and done % checkpoint_every == 0)
        ):
            manager.save(done, args=ocp.args.StandardSave(state))
    bar.close()
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    return state, history


def _restore(manager: ocp.CheckpointManager, like: TrainState, where: str) -> TrainState:
    """The latest checkpoint, restored with the structure, shapes and shardings of ``like``."""
    step = manager.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as error:  # orbax/tensorstore raise many types for corrupt files or another model
        manager.close()
        raise ValueError(
            f"Cannot resume from {where}/{step}: the checkpoint is unreadable or does not match this "
            f"run's state ({type(error).__name__}: {failures.summarize(error)}). A run of another "
            "model or config belongs in another --out; a corrupt step can be moved out of that folder "
            "to resume from the one before."
        ) from error


def _truncate_metrics(path: str, last_update: int) -> None:
    """Drops JSONL records after ``last_update`` (left by a run that died after its last checkpoint).

    A last line that is not a complete record (the run was killed while writing it) is dropped
    with a one-line warning naming the file; any other line that is not a record with an integer
    ``update`` is a ValueError naming the file and line.
    """
    if not os.path.exists(path):
        return
    with open(path) as handle:
        lines = handle.read().splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            update = json.loads(line)["update"]
            if not isinstance(update, int):
                raise TypeError(f"'update' is {update!r}")
        except (ValueError, KeyError, TypeError) as error:
            if number == len(lines):
                logging.warning(
                    "%s: dropped its incomplete last line %d (the run was interrupted).", path, number
                )
                break
            raise ValueError(
                f"{path} line {number} is not a metrics record ({failures.summarize(error)}); "
                "fix or remove that line to resume."
            ) from error
        if update <= last_update:
            kept.append(line)
    with open(path, "w") as handle:
        handle.writelines(kept)
