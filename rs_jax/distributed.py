"""Multi-device and multi-host runs: ``jax.distributed`` set-up and a ``Mesh`` with named axes.

rs_jax scales out with JAX's own SPMD runtime, never with processes it launches
itself. Every host runs the same command; JAX's multi-controller runtime joins
them (``initialize``), and one ``Mesh`` with two named axes places the work:

* ``expert`` — independent training runs: the N experts, or the M MORL runs of
  a vmapped ``trainer.fit``, are split across this axis (leading axis M of the
  stacked ``TrainState``);
* ``data`` — the batch of each run (``trainer.make_update(..., mesh=mesh)``).

``soup.sweep(..., mesh=mesh)`` spreads the λ grid points over all the devices.

A mesh of shape (E, D) uses E·D devices. On one machine with one device
everything below is a no-op or a plain ``device_put``, so the same code runs on
a laptop, one multi-GPU host, or many hosts.

>>> from rs_jax import distributed
>>> distributed.initialize()  # joins a multi-host run if one is configured
False
>>> mesh = distributed.make_mesh(expert=1)  # every device on ``data``
>>> mesh.axis_names
('expert', 'data')
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rs_jax import machine

PyTree = Any
EXPERT = "expert"
DATA = "data"
AXES = (EXPERT, DATA)

# JAX itself reads JAX_COORDINATOR_ADDRESS; these two complete a manual (non-scheduler) launch.
NUM_PROCESSES_ENV = "RS_JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "RS_JAX_PROCESS_ID"
# Opt-in for environments JAX auto-detects but we cannot see from here (Cloud TPU pods, Kubernetes).
FORCE_ENV = "RS_JAX_DISTRIBUTED"


def _scheduler_launched_several() -> bool:
    """True under SLURM or Open MPI with more than one task (JAX auto-detects both)."""
    slurm = os.environ.get("SLURM_NTASKS") if "SLURM_JOB_ID" in os.environ else None
    ompi = os.environ.get("OMPI_COMM_WORLD_SIZE") if "OMPI_MCA_orte_hnp_uri" in os.environ else None
    return any(value is not None and value.isdigit() and int(value) > 1 for value in (slurm, ompi))


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> bool:
    """Joins a multi-process JAX run when one is configured; a no-op otherwise.

    Call it first thing in a program, before any JAX computation. A multi-process
    run is configured by any of:

    * explicit arguments (all three of address, count and id for a manual launch);
    * ``JAX_COORDINATOR_ADDRESS`` (read by JAX) with ``RS_JAX_NUM_PROCESSES`` and
      ``RS_JAX_PROCESS_ID`` in the environment;
    * SLURM (``srun``) or Open MPI (``mpirun``) with several tasks: JAX detects them;
    * ``RS_JAX_DISTRIBUTED=1`` for other environments JAX detects (TPU pods, Kubernetes).

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator.
      num_processes: number of processes in the run.
      process_id: this process's rank in ``[0, num_processes)``.
      local_device_ids: restrict this process to these local devices.

    Returns:
      True if this process is part of a multi-process run (already or now), False
      for a single-process run (nothing was done).

    Raises:
      ValueError: a manual launch with some of the three values missing or invalid.
    """
    if jax.distributed.is_initialized():
        return True
    num_processes = num_processes if num_processes is not None else _env_int(NUM_PROCESSES_ENV)
    process_id = process_id if process_id is not None else _env_int(PROCESS_ID_ENV)
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    manual = any(value is not None for value in (coordinator_address, num_processes, process_id))
    if manual:
        if address is None or num_processes is None or process_id is None:
            raise ValueError(
                "A manual multi-process launch needs the coordinator address, the number of processes "
                f"and this process's id; got address={address!r}, num_processes={num_processes!r}, "
                f"process_id={process_id!r} (set JAX_COORDINATOR_ADDRESS, {NUM_PROCESSES_ENV}, "
                f"{PROCESS_ID_ENV})."
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}.")
    elif not (address or _scheduler_launched_several() or os.environ.get(FORCE_ENV) == "1"):
        return False
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )
    logging.info(
        "Process %d of %d: %d local of %d devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


FORCE_CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def cpu_device_per_core() -> int | None:
    """Gives JAX's CPU backend one device per usable core; returns that count, or None if unchanged.

    One XLA:CPU program keeps work such as brax's physics on one core, so on a CPU machine the
    shares of a mesh run in parallel only as devices of their own (2 PPO runs over 2 cores:
    0.51-0.54 of the time of one after the other, ``benchmarks/ppo_cores.py``). A count the
    process already chose (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or
    ``jax_num_cpu_devices``) is kept, and one core changes nothing. Accelerators are unaffected:
    ``jax.devices()`` still lists them first.

    Call it before any JAX computation (JAX reads the count when its backends start).
    """
    chosen = FORCE_CPU_DEVICES_FLAG in os.environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices > 0
    cores = machine.usable_cores()
    if chosen or cores < 2:
        return None
    jax.config.update("jax_num_cpu_devices", cores)
    return cores


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be an integer, got {raw!r}.") from error


def make_mesh(
    expert: int = 1, data: int | None = None, *, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A 2-D ``Mesh`` with axes (``expert``, ``data``) over all (or the first E·D) devices.

    Args:
      expert: devices along ``expert`` (independent runs are split over it).
      data: devices along ``data``; default all remaining devices, ``len(devices) // expert``.
      devices: the devices to use; default ``jax.devices()`` (every process's devices).

    Returns:
      A mesh of shape (expert, data) with automatic (GSPMD) axis types.

    Raises:
      ValueError: sizes below 1, or more devices asked for than there are.
    """
    devices = list(jax.devices() if devices is None else devices)
    if expert < 1 or (data is not None and data < 1):
        raise ValueError(f"Mesh axis sizes must be >= 1; got expert={expert}, data={data}.")
    if data is None:
        if len(devices) % expert:
            raise ValueError(
                f"expert={expert} does not divide the {len(devices)} devices; pass data= explicitly."
            )
        data = len(devices) // expert
    if expert * data > len(devices):
        raise ValueError(
            f"A mesh of expert={expert} × data={data} needs {expert * data} devices; "
            f"only {len(devices)} are visible."
        )
    return jax.make_mesh(
        (expert, data), AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices[: expert * data]
    )


def mesh_for_runs(n_runs: int, *, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh a task uses for ``n_runs`` vmapped trainings on every visible device.

    ``expert`` gets the largest share of the devices that divides ``n_runs``
    (gcd(n_runs, devices)), ``data`` the rest: 5 runs on 8 GPUs → (1, 8); 2 runs
    on 8 GPUs → (2, 4); 4 runs on 4 GPUs → (4, 1).
    """
    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}.")
    devices = list(jax.devices() if devices is None else devices)
    return make_mesh(expert=math.gcd(n_runs, len(devices)), devices=devices)


def axis_size(mesh: Mesh, axes: str | Sequence[str]) -> int:
    """Number of devices along one mesh axis or the product over several."""
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    unknown = [name for name in names if name not in mesh.shape]
    if unknown:
        raise ValueError(f"Mesh axes {unknown} are not in the mesh {dict(mesh.shape)}.")
    return int(np.prod([mesh.shape[name] for name in names], dtype=np.int64))


def put(tree: PyTree, sharding: jax.sharding.Sharding) -> PyTree:
    """Places every leaf with ``sharding``; multi-process safe.

    With several processes every process must pass the same global values (e.g.
    params built from the same seed); each one hands over only the shards its
    own devices hold.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(leaf: Any) -> jax.Array:
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        host = np.asarray(to_host(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf replicated on every device of ``mesh``."""
    return put(tree, NamedSharding(mesh, P()))


def _leading_spec(axes: str | Sequence[str]) -> P:
    return P(axes if isinstance(axes, str) else tuple(axes))


def _check_leading(tree: PyTree, mesh: Mesh, axes: str | Sequence[str], what: str) -> None:
    size = axis_size(mesh, axes)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = jnp.shape(leaf)
        if not shape or shape[0] % size:
            raise ValueError(
                f"{what}: leaf {jax.tree_util.keystr(path)} has shape {shape}; its leading axis must be "
                f"a multiple of the {size} devices along mesh axes {axes!r}."
            )


def shard_leading(tree: PyTree, mesh: Mesh, axes: str | Sequence[str] = EXPERT) -> PyTree:
    """Splits every leaf's leading axis over ``axes`` of ``mesh`` (replicated over the others).

    For a stacked ``TrainState`` (leading axis M, see ``trainer.stack_states``) on
    ``expert``, each device group trains M / E of the runs.

    Raises:
      ValueError: naming a leaf whose leading axis is not a multiple of the axis size.
    """
    _check_leading(tree, mesh, axes, "shard_leading")
    return put(tree, NamedSharding(mesh, _leading_spec(axes)))


def constrain_leading(tree: PyTree, mesh: Mesh, axes: str | Sequence[str] = DATA) -> PyTree:
    """Inside ``jit``: asks XLA to split every leaf's leading axis over ``axes``.

    Used on a collected batch (leading axis B) so that each device on ``data``
    computes the loss of B / D rows and gradients are all-reduced.
    """
    _check_leading(tree, mesh, axes, "constrain_leading")
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, _leading_spec(axes)))


def to_host(tree: PyTree) -> PyTree:
    """NumPy copies of every leaf, gathering shards that live on other processes."""

    def fetch(leaf: Any) -> np.ndarray:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(jax.device_get(leaf))

    return jax.tree.map(fetch, tree)


def pad_rows(array: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
    """Pads axis 0 up to a multiple of ``multiple`` by repeating the last row.

    Returns:
      The padded array and the original number of rows (drop the rest after use).
    """
    rows = array.shape[0]
    if rows == 0:
        raise ValueError("Cannot pad an empty array: it has no row to repeat.")
    extra = -rows % multiple
    if extra == 0:
        return array, rows
    return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)]), rows
