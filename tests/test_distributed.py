"""Scaling out: meshes, sharded λ-sweeps, expert-sharded training, multi-process runs, streamed soups.

conftest.py gives this process 4 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4).
"""

import os
import socket
import subprocess
import sys

import crash
import jax
import jax.numpy as jnp
import multiprocess_run
import numpy as np
import pytest
import stream_memory
from jax.sharding import PartitionSpec as P

from rs_jax import checkpoint, distributed, merge, soup
from rs_jax.train import trainer

# --------------------------------------------------------------------------- set-up


def test_four_host_devices():
    assert jax.device_count() == 4, "conftest.py forces 4 CPU devices"


def test_make_mesh_axes_and_errors():
    mesh = distributed.make_mesh(expert=2)
    assert mesh.axis_names == ("expert", "data") and dict(mesh.shape) == {"expert": 2, "data": 2}
    assert all(axis_type == jax.sharding.AxisType.Auto for axis_type in mesh.axis_types)
    assert dict(distributed.make_mesh().shape) == {"expert": 1, "data": 4}
    assert distributed.make_mesh(1, 2).devices.size == 2
    assert distributed.axis_size(mesh, ("expert", "data")) == 4
    with pytest.raises(ValueError, match="expert=3 does not divide the 4 devices"):
        distributed.make_mesh(expert=3)
    with pytest.raises(ValueError, match="needs 8 devices; only 4 are visible"):
        distributed.make_mesh(expert=2, data=4)
    with pytest.raises(ValueError, match="not in the mesh"):
        distributed.axis_size(mesh, "model")
    shapes = {runs: dict(distributed.mesh_for_runs(runs).shape) for runs in (1, 2, 5, 8)}
    assert shapes == {
        1: {"expert": 1, "data": 4},
        2: {"expert": 2, "data": 2},
        5: {"expert": 1, "data": 4},
        8: {"expert": 4, "data": 1},
    }


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "RS_JAX_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(distributed.NUM_PROCESSES_ENV, raising=False)
    monkeypatch.delenv(distributed.PROCESS_ID_ENV, raising=False)
    assert distributed.initialize() is False
    assert jax.process_count() == 1
    with pytest.raises(ValueError, match="needs the coordinator address, the number of processes"):
        distributed.initialize(num_processes=2)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        distributed.initialize("localhost:1234", 2, 5)
    monkeypatch.setenv(distributed.NUM_PROCESSES_ENV, "two")
    with pytest.raises(ValueError, match="RS_JAX_NUM_PROCESSES must be an integer"):
        distributed.initialize()


def test_pad_rows_repeats_the_last_row():
    padded, rows = distributed.pad_rows(np.arange(10.0).reshape(5, 2), 4)
    assert rows == 5 and padded.shape == (8, 2)
    np.testing.assert_array_equal(padded[5:], np.tile([8.0, 9.0], (3, 1)))
    assert distributed.pad_rows(np.ones((4, 2)), 4)[0].shape == (4, 2)


# --------------------------------------------------------------------------- sharded λ-sweep


@pytest.mark.parametrize("shape", [(1, 4), (2, 2), (1, 2)])
@pytest.mark.parametrize("strategy, chunk", [("map", None), ("vmap", None), ("chunked", 2)])
def test_sharded_sweep_equals_the_single_device_sweep(shape, strategy, chunk):
    experts = multiprocess_run.experts()
    grid = soup.simplex_grid(3, 5)  # 15 points: padded to 16 on 2 or 4 devices, dropped again
    single = soup.sweep(multiprocess_run.eval_rewards, experts, grid, strategy=strategy, chunk_size=chunk)
    mesh = distributed.make_mesh(*shape)
    sharded = soup.sweep(
        multiprocess_run.eval_rewards, experts, grid, strategy=strategy, chunk_size=chunk, mesh=mesh
    )
    assert sharded.shape == (15, 2)
    if strategy == "map":  # the same per-point program on every device: bit for bit
        np.testing.assert_array_equal(np.asarray(sharded), np.asarray(single))
    else:  # vmapped batches of another size (4 points per device vs 15, or chunks 2+2 vs 2+…+1)
        np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=1e-6, atol=1e-7)


def test_sharded_sweep_splits_the_grid_and_does_not_recompile():
    experts = multiprocess_run.experts()
    grid = soup.simplex_grid(3, 3)  # 6 points
    mesh = distributed.make_mesh(expert=1, data=2)
    traces = []

    def counted(params):
        traces.append(1)
        return multiprocess_run.eval_rewards(params)

    first = soup.sweep(counted, experts, grid, strategy="map", mesh=mesh, mesh_axes="data")
    second = soup.sweep(counted, experts, grid * 1.0, strategy="map", mesh=mesh, mesh_axes="data")
    assert len(traces) == 1
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    assert first.sharding.spec == P("data"), "6 points split 3 + 3 over the two devices"
    with pytest.raises(ValueError, match="'loop' dispatches from the host"):
        soup.sweep(counted, experts, grid, strategy="loop", mesh=mesh)
    with pytest.raises(ValueError, match="mesh_axes needs a mesh"):
        soup.sweep(counted, experts, grid, mesh_axes="data")


def rollout_rewards(params):
    """An eval that scans from a carry it builds itself (an env reset) to one that depends on
    the soup, like ``ppo.evaluate``: (2,) rewards."""
    weights = jax.tree.leaves(params)[0].reshape(-1)

    def step(state, _):
        state = jnp.tanh(state + weights[: state.shape[0]])
        return state, state.sum()

    _, totals = jax.lax.scan(step, jnp.zeros(3), None, length=5)
    return jnp.stack([totals.sum(), totals[-1]])


def test_sharded_sweep_of_an_eval_that_scans_from_its_own_carry():
    experts = multiprocess_run.experts()
    grid = soup.simplex_grid(3, 3)
    single = soup.sweep(rollout_rewards, experts, grid, strategy="map")
    sharded = soup.sweep(rollout_rewards, experts, grid, strategy="map", mesh=distributed.make_mesh())
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(single))


def test_cpu_device_per_core_keeps_a_chosen_count():
    """In fresh interpreters: one CPU device per usable core, unless XLA_FLAGS already chose."""
    program = (
        "import jax; from rs_jax import distributed, machine; "
        "machine.usable_cores = lambda: 3; "
        "print(distributed.cpu_device_per_core(), jax.device_count())"
    )
    outputs = {}
    for flags in ("", "--xla_force_host_platform_device_count=2"):
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        command = [sys.executable, "-c", program]
        done = subprocess.run(command, cwd=crash.REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[flags] = done.stdout.split()
    assert outputs == {"": ["3", "3"], "--xla_force_host_platform_device_count=2": ["None", "2"]}


# --------------------------------------------------------------------------- expert-sharded training


def test_two_experts_sharded_over_expert_and_data_equal_the_single_device_run():
    single = multiprocess_run.train_two_experts()
    mesh = distributed.make_mesh(expert=2, data=2)
    sharded = multiprocess_run.train_two_experts(mesh)
    assert sharded.params["w"].sharding.spec == P("expert")
    assert len(sharded.params["w"].sharding.device_set) == 4
    assert [shard.data.shape for shard in sharded.params["w"].addressable_shards] == [(1, 3)] * 4
    for got, want in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)


def test_sharded_training_resumes_from_its_checkpoint(tmp_path):
    mesh = distributed.make_mesh(expert=2, data=2)
    update, weights = multiprocess_run.make_update(mesh), jnp.asarray(multiprocess_run.REWARD_WEIGHTS)
    fresh = multiprocess_run.two_expert_states
    trainer.fit(
        update, fresh(), weights, 2, vmapped=True, mesh=mesh, run_dir=str(tmp_path), checkpoint_every=1
    )
    resumed, history = trainer.fit(
        update, fresh(), weights, 3, vmapped=True, mesh=mesh, run_dir=str(tmp_path), resume=True
    )
    assert [record["update"] for record in history] == [3]
    assert resumed.params["w"].sharding.spec == P("expert")
    straight = multiprocess_run.train_two_experts(mesh)
    for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_expert_axis_must_divide_the_runs():
    states = [trainer.init_state({"w": jnp.zeros(3)}, multiprocess_run.OPTIMIZER, None, s) for s in range(3)]
    mesh = distributed.make_mesh(expert=2)
    with pytest.raises(
        ValueError, match=r"leading axis must be a multiple of the 2 devices along mesh axes 'expert'"
    ):
        distributed.shard_leading(trainer.stack_states(states), mesh)


# --------------------------------------------------------------------------- several processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_give_the_single_process_numbers(tmp_path):
    """2 processes × 2 CPU devices joined by jax.distributed: one 4-device mesh, same numbers."""
    out = tmp_path / "result.npz"
    port = free_port()
    processes = []
    for process_id in range(2):
        env = {
            **os.environ,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            distributed.NUM_PROCESSES_ENV: "2",
            distributed.PROCESS_ID_ENV: str(process_id),
            "PYTHONPATH": os.pathsep.join(filter(None, [crash.REPO, os.environ.get("PYTHONPATH")])),
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "tests/multiprocess_run.py", str(out)],
                cwd=crash.REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(log[-2000:] for log in logs)
    result = np.load(out)
    assert (int(result["process_count"]), int(result["device_count"])) == (2, 4)
    single_rewards = soup.sweep(
        multiprocess_run.eval_rewards, multiprocess_run.experts(), soup.simplex_grid(3, 5), strategy="map"
    )
    np.testing.assert_array_equal(result["rewards"], np.asarray(single_rewards))
    single = multiprocess_run.train_two_experts()
    np.testing.assert_allclose(result["w"], np.asarray(single.params["w"]), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- streamed soups of big experts


def small_expert(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "encoder": {
            "kernel": rng.normal(size=(6, 5)).astype(np.float32),
            "bias": rng.normal(size=5).astype(np.float32),
        },
        "head": [
            jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16),
            rng.normal(size=(2, 2)).astype(np.float32),
        ],
    }


def test_streamed_soup_is_bit_for_bit_the_in_memory_soup(tmp_path):
    directories = [tmp_path / f"e{i}" for i in range(3)]
    for index, directory in enumerate(directories):
        checkpoint.save_expert(directory, small_expert(index), reward=f"r{index}", base_model="init@1")
    weights = [0.2, 0.3, 0.5]
    manifest = checkpoint.interpolate_checkpoints(directories, weights, tmp_path / "soup", group_bytes=40)
    streamed, restored_manifest = checkpoint.restore_expert(tmp_path / "soup", expected_base="init@1")
    assert restored_manifest == manifest
    assert (
        manifest.config["rewards"] == ["r0", "r1", "r2"]
        and manifest.reward == "soup(0.2,0.3,0.5 of r0+r1+r2)"
    )
    in_memory = soup.interpolate(checkpoint.restore_experts(directories)[0], weights)
    assert jax.tree.structure(streamed) == jax.tree.structure(in_memory)
    for got, want in zip(jax.tree.leaves(streamed), jax.tree.leaves(in_memory)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert sorted(os.listdir(tmp_path)) == ["e0", "e1", "e2", "soup"], "the staging file is removed"
    layout = checkpoint.read_layout(tmp_path / "soup")
    assert layout.nbytes == sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(in_memory))


def test_merge_cli_streams_when_experts_do_not_fit(tmp_path, monkeypatch, capsys):
    for index in range(2):
        checkpoint.save_expert(
            tmp_path / f"e{index}", small_expert(index), reward=f"r{index}", base_model="b"
        )
    experts = [str(tmp_path / "e0"), str(tmp_path / "e1")]
    args = ["--experts", *experts, "--weights", "0.25", "0.75", "--out"]
    assert merge.main([*args, str(tmp_path / "loaded"), "--no-stream"]) == 0
    assert "streamed" not in capsys.readouterr().out
    monkeypatch.setattr(merge, "available_memory_bytes", lambda: 10)  # "auto" now has to stream
    assert merge.main([*args, str(tmp_path / "auto")]) == 0
    assert "streamed" in capsys.readouterr().out
    loaded, loaded_manifest = checkpoint.restore_expert(tmp_path / "loaded")
    streamed, streamed_manifest = checkpoint.restore_expert(tmp_path / "auto")
    for got, want in zip(jax.tree.leaves(streamed), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert streamed_manifest.reward == loaded_manifest.reward
    assert streamed_manifest.config["weights"] == loaded_manifest.config["weights"] == [0.25, 0.75]


MB = 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssAnon from /proc (Linux)")
def test_streaming_stays_under_a_memory_cap_that_loading_every_expert_exceeds(tmp_path):
    """3 experts × 64 MB (64 leaves of 1 MB); cap = 1.5 experts, below the 3 experts loading needs."""
    directories = []
    for index in range(3):
        params = {f"layer{j:02d}": np.full((1024, 256), index + j / 64, np.float32) for j in range(64)}
        directories.append(str(tmp_path / f"e{index}"))
        checkpoint.save_expert(directories[-1], params, reward=f"r{index}", base_model="big")
        del params
    cap = 96 * MB
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    peaks = stream_memory.run_probe("stream_memory.py", str(scratch), str(2 * MB), *directories)
    print(
        f"peak RssAnon growth: streamed {peaks['streamed'] / MB:.0f} MB, loaded {peaks['loaded'] / MB:.0f} MB"
    )
    assert peaks["equal"], "the streamed soup equals the in-memory one"
    assert peaks["loaded"] > cap, f"loading every expert should exceed the cap: {peaks}"
    assert peaks["streamed"] < cap, f"streaming should stay under {cap / MB:.0f} MB: {peaks}"
