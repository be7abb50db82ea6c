"""Rewarded soups: interpolate experts fine-tuned from one initialization.

A soup is θ(λ) = Σᵢ λᵢ θᵢ over N experts θᵢ (any pytrees of floating-point
arrays, e.g. Flax params) with λ on the simplex. Everything here is a pure
function of pytrees; the λ grid is a batch dimension that ``sweep`` evaluates
in one compiled program.

>>> import jax.numpy as jnp
>>> from rs_jax import soup
>>> risky, cautious = {"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([0.0, 1.0])}
>>> soup.interpolate([risky, cautious], [0.25, 0.75])["w"]
Array([0.25, 0.75], dtype=float32)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rs_jax import distributed, operands
from rs_jax import progress as progress_bars

PyTree = Any
Strategy = Literal["auto", "loop", "vmap", "map", "chunked"]
STRATEGIES: tuple[str, ...] = ("auto", "loop", "vmap", "map", "chunked")
SIMPLEX_ATOL = 1e-5


# --------------------------------------------------------------------------- checks


def _leaf_paths(tree: PyTree) -> tuple[list[str], list[Any]]:
    leaves_with_path = jax.tree_util.tree_flatten_with_path(tree)[0]
    paths = [jax.tree_util.keystr(path) for path, _ in leaves_with_path]
    return paths, [leaf for _, leaf in leaves_with_path]


def _shape(leaf: Any) -> tuple[int, ...]:
    return tuple(leaf.shape) if hasattr(leaf, "shape") else jnp.shape(leaf)


def check_compatible(experts: Sequence[PyTree]) -> None:
    """Checks that experts share structure, shapes and floating dtypes.

    Args:
      experts: N ≥ 1 pytrees (of arrays, or of ``jax.ShapeDtypeStruct`` to check
        checkpoints before loading them).

    Raises:
      ValueError: naming the first leaf path where an expert differs from
        expert 0 (missing/extra leaf, shape, dtype), or a non-floating leaf.
    """
    if len(experts) == 0:
        raise ValueError("A soup needs at least one expert; got an empty sequence.")
    ref_paths, ref_leaves = _leaf_paths(experts[0])
    if not ref_paths:
        raise ValueError("Expert 0 has no array leaves: nothing to interpolate.")
    for path, leaf in zip(ref_paths, ref_leaves):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"Leaf {path} has dtype {jnp.result_type(leaf)}; soups interpolate "
                "floating-point parameters only (pass params, not the whole train state)."
            )
    for index, expert in enumerate(experts[1:], start=1):
        paths, leaves = _leaf_paths(expert)
        if paths != ref_paths:
            first = next(
                (i for i, (a, b) in enumerate(zip(ref_paths, paths)) if a != b),
                min(len(paths), len(ref_paths)),
            )
            only_ref = ref_paths[first] if first < len(ref_paths) else None
            only_this = paths[first] if first < len(paths) else None
            raise ValueError(
                f"Expert {index} does not have the structure of expert 0: first difference "
                f"at leaf {only_ref or only_this} (expert 0 has {only_ref}, expert {index} "
                f"has {only_this}). Experts must be fine-tuned from the same architecture."
            )
        for path, ref_leaf, leaf in zip(ref_paths, ref_leaves, leaves):
            if _shape(leaf) != _shape(ref_leaf):
                raise ValueError(
                    f"Expert {index} leaf {path} has shape {_shape(leaf)}, expert 0 has {_shape(ref_leaf)}."
                )
            if jnp.result_type(leaf) != jnp.result_type(ref_leaf):
                raise ValueError(
                    f"Expert {index} leaf {path} has dtype {jnp.result_type(leaf)}, expert 0 "
                    f"has {jnp.result_type(ref_leaf)}; cast the experts to one dtype first."
                )


def _is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def check_weights(
    weights: Any, n_experts: int, *, allow_extrapolation: bool = False, name: str = "weights"
) -> Any:
    """Validates interpolation weights of shape (..., N); returns them as an array.

    There must be at least one row; rows must be finite and sum to 1 (affine combinations). Unless
    ``allow_extrapolation`` each entry must also lie in [0, 1] (the simplex).
    Traced weights (inside ``jit``) are checked for shape only.
    """
    if not _is_concrete(weights):
        array = weights
    else:
        try:
            array = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be numbers, got {weights!r}.") from error
    if array.ndim == 0 or array.shape[-1] != n_experts:
        raise ValueError(
            f"{name} must have {n_experts} entries (one per expert) along the last axis; "
            f"got shape {tuple(array.shape)}."
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(array.shape)}); give at least one λ.")
    if not _is_concrete(array):
        return array
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; got {array.tolist()}.")
    sums = array.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=SIMPLEX_ATOL, rtol=0.0):
        raise ValueError(f"{name} must sum to 1 (λ on the simplex); got sums {np.round(sums, 6).tolist()}.")
    if not allow_extrapolation and (array.min() < -SIMPLEX_ATOL or array.max() > 1 + SIMPLEX_ATOL):
        raise ValueError(
            f"{name} must lie in [0, 1]; got {array.tolist()}. Pass allow_extrapolation=True "
            "to extrapolate beyond the experts (paper Fig. 10c)."
        )
    return array


def check_weight_vector(
    weights: Any, n_experts: int, *, allow_extrapolation: bool = False, name: str = "weights"
) -> Any:
    """``check_weights`` for one λ: shape (N,) exactly, not a grid of them."""
    array = check_weights(weights, n_experts, allow_extrapolation=allow_extrapolation, name=name)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be one λ of shape ({n_experts},); got shape {tuple(array.shape)}. "
            "Evaluate a grid of λ with soup.sweep."
        )
    return array


# --------------------------------------------------------------------------- interpolation


def stack_experts(experts: Sequence[PyTree]) -> PyTree:
    """Stacks N compatible experts into one pytree whose leaves have a leading axis N."""
    check_compatible(experts)
    treedef = jax.tree_util.tree_structure(experts[0])
    per_expert = [_leaf_paths(expert)[1] for expert in experts]
    stacked = [jnp.stack(leaves) for leaves in zip(*per_expert)]
    return jax.tree_util.tree_unflatten(treedef, stacked)


def _accumulation_dtype(dtype: Any) -> Any:
    """float64 for float64 leaves, float32 for every narrower float (bf16/fp16 sums lose bits)."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _weighted_sum(stacked_leaf: jax.Array, leaf_weights: jax.Array) -> jax.Array:
    """Σᵢ wᵢ leafᵢ, accumulated in at least float32, returned in the leaf dtype."""
    compute_dtype = _accumulation_dtype(stacked_leaf.dtype)
    combined = jnp.tensordot(leaf_weights.astype(compute_dtype), stacked_leaf.astype(compute_dtype), axes=1)
    return combined.astype(stacked_leaf.dtype)


def combine_leaves(leaves: Sequence[Any], weights: jax.Array) -> jax.Array:
    """Σᵢ wᵢ leavesᵢ for one leaf of N experts; no value checks.

    Args:
      leaves: N arrays of one shape and floating dtype.
      weights: (N,) λ.

    Returns:
      The combination in the leaves' dtype (accumulated in at least float32).
    """
    return _weighted_sum(jnp.stack(leaves), weights)


def interpolate_stacked(stacked_experts: PyTree, weights: jax.Array) -> PyTree:
    """θ(λ) from experts stacked by ``stack_experts``; no value checks (jit-friendly).

    Args:
      stacked_experts: pytree with leaves of shape (N, ...).
      weights: (N,) λ.
    """
    return jax.tree.map(lambda leaf: _weighted_sum(leaf, weights), stacked_experts)


def _per_leaf_weights(
    weights: PyTree, expert: PyTree, n_experts: int, allow_extrapolation: bool
) -> list[Any]:
    """Broadcasts a weights pytree (a prefix of the experts' structure) to every leaf."""
    prefixes = jax.tree_util.tree_flatten_with_path(weights, is_leaf=_is_weight_vector)[0]
    checked = [
        (
            path,
            check_weight_vector(
                vector,
                n_experts,
                allow_extrapolation=allow_extrapolation,
                name=f"weights{jax.tree_util.keystr(path)}",
            ),
        )
        for path, vector in prefixes
    ]
    per_leaf = []
    for leaf_path, _ in jax.tree_util.tree_flatten_with_path(expert)[0]:
        matches = [vector for path, vector in checked if tuple(leaf_path[: len(path)]) == tuple(path)]
        if len(matches) != 1:
            raise ValueError(
                f"Per-leaf weights must be a pytree prefix of the experts' structure with a "
                f"length-{n_experts} vector covering each leaf; leaf "
                f"{jax.tree_util.keystr(leaf_path)} is covered by {len(matches)} entries."
            )
        per_leaf.append(matches[0])
    return per_leaf


def _is_weight_vector(node: Any) -> bool:
    if isinstance(node, (np.ndarray, jax.Array)):
        return True
    return isinstance(node, (list, tuple)) and all(isinstance(v, (int, float, np.number)) for v in node)


def interpolate(experts: Sequence[PyTree], weights: Any, *, allow_extrapolation: bool = False) -> PyTree:
    """Interpolates N experts: θ(λ) = Σᵢ λᵢ θᵢ.

    Args:
      experts: N pytrees with identical structure, shapes and floating dtypes.
      weights: λ of shape (N,) on the simplex; or a pytree that is a prefix of the
        experts' structure with an (N,) λ at each of its leaves, to interpolate
        parts of the network differently (e.g. ``{"encoder": [.5, .5],
        "decoder": [.2, .8]}``).
      allow_extrapolation: permit entries outside [0, 1] (rows must still sum to 1).

    Returns:
      A pytree like ``experts[0]``, each leaf in its original dtype (the sum is
      accumulated in at least float32).

    Raises:
      ValueError: on incompatible experts (naming the leaf) or invalid weights.
    """
    check_compatible(experts)
    n_experts = len(experts)
    treedef = jax.tree_util.tree_structure(experts[0])
    per_expert = [_leaf_paths(expert)[1] for expert in experts]
    if isinstance(weights, (list, tuple, np.ndarray, jax.Array, float, int)):
        vector = check_weight_vector(weights, n_experts, allow_extrapolation=allow_extrapolation)
        leaf_weights = [jnp.asarray(vector)] * len(per_expert[0])
    else:
        leaf_weights = [
            jnp.asarray(w) for w in _per_leaf_weights(weights, experts[0], n_experts, allow_extrapolation)
        ]
    combined = [combine_leaves(leaves, w) for leaves, w in zip(zip(*per_expert), leaf_weights)]
    return jax.tree_util.tree_unflatten(treedef, combined)


# --------------------------------------------------------------------------- grids


def simplex_grid(n_rewards: int, points: int = 11) -> np.ndarray:
    """All λ on the simplex whose entries are multiples of 1/(points-1).

    For N=2 this is the paper's grid λ ∈ {0, 0.1, …, 1} as rows (1-λ, λ), with λ
    (the weight of expert 2) increasing. For N ≥ 3 it has C(points+N-2, N-1) rows.

    Returns:
      float64 array of shape (K, n_rewards).
    """
    if n_rewards < 2:
        raise ValueError(f"A soup needs n_rewards >= 2, got {n_rewards}.")
    if points < 2:
        raise ValueError(f"points must be >= 2 (both vertices), got {points}.")
    divisions = points - 1
    rows = []
    for bars in itertools.combinations(range(divisions + n_rewards - 1), n_rewards - 1):
        edges = (-1, *bars, divisions + n_rewards - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_rewards)])
    return np.asarray(rows[::-1], dtype=np.float64) / divisions


# --------------------------------------------------------------------------- sweeps


def default_strategy(backend: str | None = None) -> str:
    """The strategy ``auto`` resolves to on a backend.

    On CPU a vmap over λ runs slower than evaluating the grid points one after
    the other (K parameter copies thrash the cache; see benchmarks/sweep.py), so
    CPU uses ``map`` (sequential, one program). Accelerators use ``chunked``:
    vmapped chunks whose size is bounded by free device memory.
    """
    backend = backend or jax.default_backend()
    return "map" if backend == "cpu" else "chunked"


def _param_bytes(stacked_experts: PyTree) -> int:
    leaves = jax.tree.leaves(stacked_experts)
    return sum(leaf[0].size * leaf.dtype.itemsize for leaf in leaves)


def default_chunk_size(stacked_experts: PyTree, n_points: int, memory_fraction: float = 0.25) -> int:
    """Chunk of grid points whose interpolated params fit in ``memory_fraction`` of free memory."""
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
        return min(n_points, 4)
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    per_point = max(1, _param_bytes(stacked_experts))
    return int(max(1, min(n_points, memory_fraction * free // per_point)))


Merge = Callable[[PyTree, jax.Array], PyTree]
Frozen = tuple[list[jax.Array], list[jax.Array]]  # the arrays of (eval_fn, merge): program operands
PointFn = Callable[[Frozen, PyTree, jax.Array, jax.Array | None], jax.Array]


def _local_sweep(point: PointFn, strategy: str, chunk_size: int | None) -> Callable[..., jax.Array]:
    """The un-jitted ``(frozen, stacked_experts, grid, bar_id) -> rewards`` of a one-program strategy."""
    batch_size = None if strategy == "map" else chunk_size

    def sweep_mapped(
        frozen: Frozen,
        stacked_experts: PyTree,
        grid: jax.Array,
        bar_id: jax.Array | None = None,
    ) -> jax.Array:
        if strategy == "vmap":
            return jax.vmap(point, in_axes=(None, None, 0, None))(frozen, stacked_experts, grid, bar_id)
        return jax.lax.map(lambda w: point(frozen, stacked_experts, w, bar_id), grid, batch_size=batch_size)

    return sweep_mapped


@functools.lru_cache(maxsize=64)
def _sweep_program(
    eval_skeleton: operands.Skeleton,
    merge_skeleton: operands.Skeleton,
    strategy: str,
    chunk_size: int | None,
    mesh: Mesh | None,
    mesh_axes: tuple[str, ...] | None,
    ticking: bool,
) -> Callable[..., jax.Array]:
    """The compiled ``(frozen, stacked_experts, grid, bar_id=None) -> rewards``, ``frozen`` being
    the arrays of the eval function and of the merge rule (see ``make_sweep``)."""

    def at_point(
        frozen: Frozen,
        stacked_experts: PyTree,
        weights: jax.Array,
        bar_id: jax.Array | None,
    ) -> jax.Array:
        eval_arrays, merge_arrays = frozen
        params = merge_skeleton.merge(merge_arrays)(stacked_experts, weights)
        rewards = jnp.asarray(eval_skeleton.merge(eval_arrays)(params))
        return progress_bars.tick(bar_id, rewards) if ticking else rewards

    if mesh is not None:
        spec = P(mesh_axes if mesh_axes is not None else tuple(mesh.axis_names))
        local = _local_sweep(at_point, strategy, chunk_size)
        # Each device evaluates its own points without collectives. Unchecked varying-axis types let
        # an eval_fn scan from a carry it builds itself (an env reset) to one that depends on the soup.
        program = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), spec), out_specs=spec, check_vma=False)
        return jax.jit(program)
    if strategy == "loop":
        point_fn = jax.jit(at_point)

        def sweep_loop(
            frozen: Frozen,
            stacked_experts: PyTree,
            grid: jax.Array,
            bar_id: jax.Array | None = None,
        ) -> jax.Array:
            return jnp.stack([point_fn(frozen, stacked_experts, weights, bar_id) for weights in grid])

        return sweep_loop
    return jax.jit(_local_sweep(at_point, strategy, chunk_size))


def make_sweep(
    eval_fn: Callable[[PyTree], jax.Array],
    strategy: str = "map",
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    mesh_axes: tuple[str, ...] | None = None,
    *,
    merge: Merge | None = None,
    ticking: bool = False,
) -> Callable[..., jax.Array]:
    """Compiles ``sweep_fn(stacked_experts, grid, bar_id=None) -> rewards`` for one strategy.

    ``eval_fn`` and ``merge`` (default ``interpolate_stacked``) may be callable pytrees (e.g. a
    ``jax.tree_util.Partial`` over a frozen base model and a reward model's params, or over a
    merge rule and its θ₀): their arrays are then operands of the compiled program, not
    constants (``rs_jax.operands``); a plain function that closes over big arrays embeds them.
    The program is cached per (eval_fn's skeleton, merge's skeleton, strategy, chunk_size,
    mesh, mesh_axes, ticking), so calling the same sweep twice, or a ``Partial`` of the same
    function over other arrays of the same shapes, does not retrace. ``loop`` compiles a single
    grid point and dispatches it K times; the others run the whole grid as one program. With a
    ``mesh`` the program is a ``shard_map``: the experts and the arrays of eval_fn and merge
    are replicated, the grid (whose length must be a multiple of the devices along
    ``mesh_axes``) is split over ``mesh_axes``, and each device runs ``strategy`` on its own
    points. With ``ticking`` (no mesh) every point advances the ``rs_jax.progress`` bar whose
    index ``sweep_fn`` gets as ``bar_id``.
    """
    if strategy not in STRATEGIES or strategy == "auto":
        raise ValueError(f"strategy must be one of {STRATEGIES[1:]}, got {strategy!r}.")
    if mesh is not None and strategy == "loop":
        raise ValueError("strategy 'loop' dispatches from the host; a sharded sweep needs map/vmap/chunked.")
    if mesh is not None and ticking:
        raise ValueError("A sharded sweep does not tick a progress bar from inside its program.")
    eval_arrays, eval_skeleton = operands.split(eval_fn)
    merge_arrays, merge_skeleton = operands.split(interpolate_stacked if merge is None else merge)
    frozen = (eval_arrays, merge_arrays)
    if mesh is not None:
        frozen = distributed.replicate(frozen, mesh)
    program = _sweep_program(eval_skeleton, merge_skeleton, strategy, chunk_size, mesh, mesh_axes, ticking)
    return functools.partial(program, frozen)


def sweep(
    eval_fn: Callable[[PyTree], jax.Array],
    experts: Sequence[PyTree] | PyTree,
    grid: Any,
    *,
    merge: Merge | None = None,
    strategy: Strategy = "auto",
    chunk_size: int | None = None,
    allow_extrapolation: bool = False,
    mesh: Mesh | None = None,
    mesh_axes: str | Sequence[str] | None = None,
    progress: str | None = None,
) -> jax.Array:
    """Evaluates ``eval_fn(merge(experts, λ))`` at every λ of ``grid``.

    Args:
      eval_fn: jit-able ``params -> rewards`` (any array shape, e.g. (R,)). Pass
        the same function object across calls to reuse the compiled sweep. Hold frozen
        arrays (a base model, reward-model params) in a callable pytree such as
        ``jax.tree_util.Partial(evaluate, base_params)`` rather than in a closure: they
        are then operands of the compiled sweep, not constants (see ``make_sweep``).
      experts: a sequence of N expert pytrees, or their ``stack_experts`` result.
      grid: (K, N) λ with K ≥ 1, e.g. ``simplex_grid(N)``.
      merge: jit-able ``(stacked_experts (leaves (N, ...)), λ (N,)) -> params`` that
        ``eval_fn`` accepts (its structure may differ from one expert's); default the
        linear soup ``interpolate_stacked``. A rule of ``rs_jax.merge_rules`` with its
        parameters bound as a callable pytree, e.g. ``jax.tree_util.Partial(merge_rules.ties,
        base=θ₀, density=0.2)``, keeps θ₀ an operand; its Python numbers stay static.
      strategy: ``loop`` (one compiled point, K dispatches), ``vmap`` (all K at
        once: K param copies in memory), ``map`` (sequential ``lax.map``, one copy),
        ``chunked`` (``lax.map`` over vmapped chunks: ``chunk_size`` copies) or
        ``auto`` (``default_strategy()`` for the backend). With a ``mesh`` this is
        what each device runs on its share of the grid (``loop`` is refused).
      chunk_size: grid points per chunk for ``chunked``; default from free memory.
        Peak memory is (chunk_size + N) copies of the params per device.
      allow_extrapolation: permit λ outside [0, 1].
      mesh: spread the grid points over devices (see ``distributed.make_mesh``):
        the experts are replicated on every device, the grid is padded to a
        multiple of the device count (by repeating its last row) and split, and
        the padding is dropped from the result. Works across hosts after
        ``distributed.initialize()``.
      mesh_axes: which mesh axes carry the grid; default all of them.
      progress: description of a tqdm bar over the K points, with an ETA and the last
        point's rewards (None: no bar). ``loop`` and ``map`` tick as each point finishes,
        ``chunked`` as each chunk does, ``vmap`` and a sharded sweep once at the end. The bar
        does not change the rewards; the program compiled with a bar is reused by every
        later call with a bar.

    Returns:
      (K, ...) rewards, row k for ``grid[k]``.

    Raises:
      ValueError: on an invalid or empty grid, or when ``eval_fn`` returns a non-finite
        reward (naming the first grid row and its λ): a sweep never hands back NaN or inf.
    """
    stacked = experts if not isinstance(experts, (list, tuple)) else stack_experts(experts)
    n_experts = jax.tree.leaves(stacked)[0].shape[0]
    grid_array = check_weights(grid, n_experts, allow_extrapolation=allow_extrapolation, name="grid")
    if grid_array.ndim != 2:
        raise ValueError(f"grid must have shape (K, {n_experts}); got {grid_array.shape}.")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    resolved = default_strategy() if strategy == "auto" else strategy
    with contextlib.ExitStack() as stack:
        bar_id = (
            None if progress is None else stack.enter_context(progress_bars.bar(progress, len(grid_array)))
        )
        if mesh is None:
            if mesh_axes is not None:
                raise ValueError("mesh_axes needs a mesh.")
            if resolved == "chunked" and chunk_size is None:
                chunk_size = default_chunk_size(stacked, grid_array.shape[0])
            _check_chunk_size(chunk_size)
            sweep_fn = make_sweep(
                eval_fn,
                resolved,
                chunk_size if resolved == "chunked" else None,
                merge=merge,
                ticking=bar_id is not None,
            )
            grid_points = jnp.asarray(grid_array, dtype=jnp.float32)
            rewards = (
                sweep_fn(stacked, grid_points) if bar_id is None else sweep_fn(stacked, grid_points, bar_id)
            )
        else:
            rewards = _sharded_sweep(
                eval_fn, merge, stacked, grid_array, resolved, chunk_size, mesh, mesh_axes
            )
        host_rewards = np.asarray(rewards)
        if bar_id is not None and mesh is not None:
            progress_bars.advance(bar_id, host_rewards[-1], len(grid_array))
    _check_finite_rewards(host_rewards, grid_array)
    return rewards


def _check_finite_rewards(rewards: np.ndarray, grid: np.ndarray) -> None:
    finite = np.isfinite(rewards).reshape(len(grid), -1).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(
            f"eval_fn returned non-finite rewards {rewards[row].tolist()} at grid row {row}, "
            f"λ = {np.round(grid[row], 6).tolist()} ({int((~finite).sum())} of {len(grid)} rows non-finite)."
        )


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")


def _sharded_sweep(
    eval_fn: Callable[[PyTree], jax.Array],
    merge: Merge | None,
    stacked: PyTree,
    grid_array: np.ndarray,
    strategy: str,
    chunk_size: int | None,
    mesh: Mesh,
    mesh_axes: str | Sequence[str] | None,
) -> jax.Array:
    axes = (
        tuple(mesh.axis_names)
        if mesh_axes is None
        else ((mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes))
    )
    devices = distributed.axis_size(mesh, axes)
    padded, n_points = distributed.pad_rows(np.asarray(grid_array, np.float32), devices)
    if strategy == "chunked" and chunk_size is None:
        chunk_size = default_chunk_size(stacked, padded.shape[0] // devices)
    _check_chunk_size(chunk_size)
    sweep_fn = make_sweep(
        eval_fn, strategy, chunk_size if strategy == "chunked" else None, mesh, axes, merge=merge
    )
    placed_experts = distributed.replicate(stacked, mesh)
    placed_grid = distributed.put(padded, NamedSharding(mesh, P(axes)))
    rewards = sweep_fn(placed_experts, placed_grid)
    if not rewards.is_fully_addressable:  # several hosts: every process gets the whole result
        return jnp.asarray(distributed.to_host(rewards)[:n_points])
    return rewards[:n_points]


# --------------------------------------------------------------------------- Fisher merging


def fisher_merge(
    experts: Sequence[PyTree],
    fishers: Sequence[PyTree],
    weights: Any,
    *,
    floor: float = 1e-8,
) -> PyTree:
    """Fisher-weighted soup θ = Σᵢ λᵢFᵢθᵢ / Σᵢ λᵢFᵢ, per parameter.

    The paper's Remark 5 proposes this to fix the sub-optimality of one shared λ
    when the rewards' curvatures differ; with equal Fishers it reduces to
    ``interpolate``. Fisher entries are clipped below at ``floor`` so parameters
    with zero Fisher in every expert fall back to the plain λ-average.

    Args:
      experts: N expert pytrees.
      fishers: N pytrees like the experts with non-negative diagonal Fishers
        (e.g. from ``diagonal_fisher``).
      weights: (N,) λ on the simplex (no extrapolation: the denominator must stay > 0).
      floor: lower bound applied to every Fisher entry, > 0.
    """
    if len(fishers) != len(experts):
        raise ValueError(f"Got {len(experts)} experts but {len(fishers)} Fishers.")
    check_compatible(list(experts) + list(fishers))
    lambdas = jnp.asarray(check_weight_vector(weights, len(experts)))
    return fisher_merge_stacked(stack_experts(experts), stack_experts(fishers), lambdas, floor=floor)


def fisher_merge_stacked(
    stacked_experts: PyTree, stacked_fishers: PyTree, weights: jax.Array, *, floor: float = 1e-8
) -> PyTree:
    """``fisher_merge`` of experts and Fishers stacked by ``stack_experts``; checks ``floor`` only.

    Args:
      stacked_experts: pytree with leaves of shape (N, ...).
      stacked_fishers: the same structure and shapes, non-negative.
      weights: (N,) λ.
      floor: lower bound applied to every Fisher entry, > 0.
    """
    if not floor > 0:
        raise ValueError(f"floor must be > 0, got {floor}.")

    def merge_leaf(params: jax.Array, fisher: jax.Array) -> jax.Array:
        compute_dtype = _accumulation_dtype(params.dtype)
        precision = jnp.maximum(fisher.astype(compute_dtype), floor)
        weighted = weights.astype(compute_dtype).reshape((-1,) + (1,) * (params.ndim - 1)) * precision
        merged = (weighted * params.astype(compute_dtype)).sum(0) / weighted.sum(0)
        return merged.astype(params.dtype)

    return jax.tree.map(merge_leaf, stacked_experts, stacked_fishers)


def diagonal_fisher(
    log_prob_fn: Callable[[PyTree, Any], jax.Array],
    params: PyTree,
    examples: Any,
    *,
    batch_size: int | None = None,
) -> PyTree:
    """Diagonal Fisher E_x[(∂ log p(x; θ)/∂θ)²], averaged over examples.

    With examples sampled from the model this is a Monte Carlo estimate of the
    Fisher information; with dataset labels it is the empirical Fisher.

    Args:
      log_prob_fn: ``(params, example) -> scalar`` log-likelihood of one example.
      params: the expert's params.
      examples: pytree whose leaves have a leading axis S (one entry per example).
      batch_size: per-example gradients computed this many at a time (bounds
        memory to batch_size gradient copies); must divide S. Default: all S.

    Returns:
      A pytree like ``params``.
    """
    n_examples = jax.tree.leaves(examples)[0].shape[0]
    batch_size = batch_size or n_examples
    if n_examples == 0 or n_examples % batch_size:
        raise ValueError(f"batch_size={batch_size} must divide the number of examples ({n_examples} > 0).")
    return _diagonal_fisher(log_prob_fn, batch_size, params, examples)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _diagonal_fisher(log_prob_fn, batch_size, params, examples):
    per_example_grad = jax.vmap(jax.grad(log_prob_fn), in_axes=(None, 0))
    chunks = jax.tree.map(lambda x: x.reshape((-1, batch_size, *x.shape[1:])), examples)

    def accumulate(total, chunk):
        squares = jax.tree.map(lambda g: jnp.square(g).sum(0), per_example_grad(params, chunk))
        return jax.tree.map(jnp.add, total, squares), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(accumulate, zeros, chunks)
    n_examples = jax.tree.leaves(examples)[0].shape[0]
    return jax.tree.map(lambda s: s / n_examples, total)
