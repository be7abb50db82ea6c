"""Faults and bad input: killed runs resume exactly; bad input gives one clear error and changes nothing.

Already covered elsewhere (not repeated here): λ of wrong length / negative / NaN for ``soup``
(test_soup), a foreign base model and an existing ``--out`` for the merge CLI (test_merge), a
manifest removed or params truncated at ``restore_expert`` and a crash mid ``save_expert``
(test_checkpoint), unknown config keys and unparsable values for ``config.override``
(test_config, test_locomotion), a reward turning NaN mid-training (test_train).
"""

import errno
import hashlib
import json
import os
import shutil
import socket

import crash
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import resumable_run

from rs_jax import checkpoint, experiment, merge
from rs_jax.train import trainer

# --------------------------------------------------------------------------- killed training runs


def truncate_data_files(directory):
    """Cuts every array data file (orbax's ``d/`` folders) under ``directory`` to 3 bytes."""
    cut = 0
    for root, _, names in os.walk(directory):
        if "d" in os.path.relpath(root, directory).split(os.sep):
            for name in names:
                with open(os.path.join(root, name), "r+b") as handle:
                    handle.truncate(3)
                cut += 1
    assert cut, f"no data files under {directory}"


def committed_steps(directory) -> list[int]:
    with ocp.CheckpointManager(os.path.abspath(directory)) as manager:
        return list(manager.all_steps())


def assert_every_committed_step_restores(directory) -> list[int]:
    """No checkpoint is half-written: every step orbax lists restores in full."""
    steps = committed_steps(directory)
    with ocp.CheckpointManager(os.path.abspath(directory)) as manager:
        for step in steps:
            restored = manager.restore(step)
            assert int(np.asarray(restored["step"])) == step
            assert np.asarray(restored["carry"]["ballast"]).size == BALLAST_MB * 2**18
    return steps


BALLAST_MB = 16  # each checkpoint writes 16 MB of random floats: long enough to be killed mid-write
UPDATES = 6


def test_killed_mid_update_and_mid_checkpoint_write_resumes_to_the_uninterrupted_params(tmp_path):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    args = ["tests/resumable_run.py", "--run-dir", str(run_dir), "--updates", str(UPDATES)]
    args += ["--ballast-mb", str(BALLAST_MB)]

    # 1. SIGKILL while update 3 runs (blocked inside the jitted update), once no checkpoint is in flight.
    first = crash.Process([*args, "--hang-at", "3"], tmp_path / "logs", "first")
    first.kill_when(lambda: first.printed("update 3 started") and not crash.writing(checkpoints))
    assert assert_every_committed_step_restores(checkpoints) == [1, 2]

    # 2. Resume; SIGKILL while a checkpoint is being written (its temporary folder exists).
    second = crash.Process([*args, "--resume"], tmp_path / "logs", "second")
    second.kill_when(lambda: crash.writing(checkpoints))
    assert "update 1 started" not in second.stdout(), "the resumed run started over"
    steps = assert_every_committed_step_restores(checkpoints)
    assert steps and 2 <= max(steps) < UPDATES

    # 3. Resume to the end (in this process) and compare with a run that was never interrupted.
    resumed = resumable_run.train(str(run_dir), UPDATES, resume=True, ballast_mb=BALLAST_MB)
    straight = resumable_run.train(None, UPDATES, ballast_mb=BALLAST_MB)
    np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(straight.params["w"]))
    for got, want in zip(jax.tree.leaves(resumed.opt_state), jax.tree.leaves(straight.opt_state)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert int(resumed.step) == UPDATES
    logged = [json.loads(line)["update"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, UPDATES + 1)), "each update is logged exactly once"


class EmptyLearner:
    """Collects a batch with zero rows (an empty dataset)."""

    def collect(self, params, carry, reward_weights, key):
        return {"targets": jnp.zeros((0,))}, carry, {"reward": reward_weights[0]}

    def loss(self, params, minibatch, key):
        return jnp.mean(jnp.square(params["w"] - minibatch["targets"])), {}


class FitLearner:
    """Fits w (shape (64,)) to 1 with a fixed batch."""

    def collect(self, params, carry, reward_weights, key):
        return {"targets": jnp.ones((4, 64))}, carry, {"reward": reward_weights[0]}

    def loss(self, params, minibatch, key):
        return jnp.mean(jnp.square(params["w"][None, :] - minibatch["targets"])), {}


def test_empty_batch_is_a_clear_error():
    optimizer = optax.sgd(0.1)
    update = trainer.make_update(EmptyLearner(), optimizer, num_epochs=1, num_minibatches=1)
    state = trainer.init_state({"w": jnp.zeros(())}, optimizer, None, 0)
    with pytest.raises(ValueError, match=r"empty batch \(0 rows\)"):
        trainer.fit(update, state, jnp.ones(1), 2)


def test_zero_evaluation_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="Cannot average zero samples"):
        experiment.Evaluation.from_samples(np.eye(2), np.zeros((2, 0, 2)))


def test_resume_from_a_corrupt_training_checkpoint_names_it(tmp_path):
    optimizer = optax.sgd(0.1)
    update = trainer.make_update(FitLearner(), optimizer, num_epochs=1, num_minibatches=2)

    def fresh():
        return trainer.init_state({"w": jnp.zeros((64,))}, optimizer, None, 0)

    trainer.fit(update, fresh(), jnp.ones(1), 2, run_dir=str(tmp_path), checkpoint_every=1)
    truncate_data_files(tmp_path / "checkpoints" / "2")
    with pytest.raises(ValueError, match=r"Cannot resume from .*checkpoints/2: the checkpoint is unreadable"):
        trainer.fit(update, fresh(), jnp.ones(1), 3, run_dir=str(tmp_path), resume=True)
    # A state of another shape is refused the same way, not restored into.
    other = trainer.init_state({"w": jnp.zeros((3,))}, optimizer, None, 0)
    os.rename(tmp_path / "checkpoints" / "2", tmp_path / "broken-step-2")
    with pytest.raises(ValueError, match=r"checkpoints/1: .*does not match this run's state"):
        trainer.fit(update, other, jnp.ones(1), 3, run_dir=str(tmp_path), resume=True)


# --------------------------------------------------------------------------- merge CLI on bad input


def tree_digest(directory) -> str:
    """Hash of every file's path and bytes under ``directory``."""
    digest = hashlib.sha256()
    for root, dirs, names in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def expert(value: float, shape=(2, 3)) -> dict:
    return {"w": np.full(shape, value, np.float32), "b": np.full((3,), -value, np.float32)}


def garble_manifest(directory):
    for name in os.listdir(directory / "0" / "manifest"):
        (directory / "0" / "manifest" / name).write_bytes(b"\x00not json{")


def remove_manifest(directory):
    for name in os.listdir(directory / "0" / "manifest"):
        os.remove(directory / "0" / "manifest" / name)


def save(directory, params, base="init@1"):
    checkpoint.save_expert(directory, params, reward=directory.name, base_model=base)


CASES = {
    # name: (prepare(tmp_path) -> None, weights, expected message)
    "wrong-length": (lambda d: None, ["0.2", "0.3", "0.5"], "Got 2 experts but 3 weights"),
    "negative": (lambda d: None, ["-0.5", "1.5"], "must lie in [0, 1]"),
    "nan": (lambda d: None, ["nan", "1"], "must be finite"),
    "truncated": (lambda d: truncate_data_files(d / "b" / "0" / "params"), ["0.5", "0.5"], "unreadable"),
    "garbled-manifest": (lambda d: garble_manifest(d / "b"), ["0.5", "0.5"], "no readable manifest"),
    "missing-manifest": (lambda d: remove_manifest(d / "b"), ["0.5", "0.5"], "no readable manifest"),
    "other-base": (
        lambda d: (os.rename(d / "b", d / "b-old"), save(d / "b", expert(2.0), base="init@2")),
        ["0.5", "0.5"],
        "fine-tuned from base model 'init@2', not 'init@1'",
    ),
    "other-architecture": (
        lambda d: (os.rename(d / "b", d / "b-old"), save(d / "b", expert(2.0, shape=(2, 4)))),
        ["0.5", "0.5"],
        r"leaf ['w'] has shape (2, 4)",
    ),
    "no-committed-step": (
        lambda d: os.rename(d / "b" / "0", d / "b" / "0.orbax-checkpoint-tmp-1"),
        ["0.5", "0.5"],
        "has no committed checkpoint",
    ),
}


@pytest.fixture(scope="module")
def pristine_experts(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    save(root / "a", expert(1.0))
    save(root / "b", expert(3.0))
    return root


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_merge_cli_bad_input_is_one_clear_error_and_writes_nothing(
    case, stream, pristine_experts, tmp_path, capsys
):
    prepare, weights, message = CASES[case]
    shutil.copytree(pristine_experts, tmp_path / "experts")
    experts = tmp_path / "experts"
    prepare(experts)
    before = tree_digest(tmp_path)
    out = tmp_path / "merged"
    paths = [str(experts / "a"), str(experts / "b")]
    code = merge.main(["--experts", *paths, "--weights", *weights, "--out", str(out), stream])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert not out.exists(), "nothing is written on error"
    assert tree_digest(tmp_path) == before, "no file was created, changed or removed"


def test_task_cli_refuses_a_wrongly_typed_override(capsys):
    from tasks import locomotion

    with pytest.raises(SystemExit) as exit_info:
        locomotion.main(["--preset", "smoke", "--set", "seed=many"])
    assert exit_info.value.code == 2
    assert "Config key 'seed': cannot parse 'many' as int" in capsys.readouterr().err


def merge_args(experts_root, out, *extra) -> list[str]:
    experts = [str(experts_root / "a"), str(experts_root / "b")]
    return ["--experts", *experts, "--weights", "0.5", "0.5", "--out", str(out), *extra]


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err


@pytest.mark.parametrize(
    "out, message",
    [
        (lambda d: d / "experts" / "a" / "7", "lies inside expert directory"),
        (lambda d: d / "experts" / "b", "already exists and is not empty"),
        (lambda d: d / "a-file" / "merged", "is a file, not a directory"),
        (lambda d: "/proc/rs_jax-merged", "cannot be written (No such file or directory in /proc)"),
    ],
    ids=["inside-an-expert", "an-expert", "under-a-file", "under-proc"],
)
def test_merge_cli_refuses_an_unusable_out_and_changes_nothing(
    pristine_experts, tmp_path, capsys, out, message
):
    shutil.copytree(pristine_experts, tmp_path / "experts")
    (tmp_path / "a-file").write_text("mine")
    before = tree_digest(tmp_path)
    code = merge.main(merge_args(tmp_path / "experts", out(tmp_path)))
    assert_one_line_error(code, capsys.readouterr().err, message)
    assert tree_digest(tmp_path) == before
    checkpoint.restore_expert(tmp_path / "experts" / "a")


FULL_DISK_MERGE = """
import resource, signal, sys
from rs_jax import merge
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.exit(merge.main(sys.argv[2:]))
"""


def test_merge_cli_on_a_full_disk_is_one_line_with_a_log(tmp_path):
    big = {"w": np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)}
    for name in ("a", "b"):
        save(tmp_path / name, big)
    # 100 kB: the 4 kB probe of --out passes, orbax's ~250 kB data file does not.
    args = ["-c", FULL_DISK_MERGE, "100000", *merge_args(tmp_path, tmp_path / "out")]
    run = crash.Process(args, tmp_path)
    code = run.wait()
    err = run.stderr()
    assert_one_line_error(code, err, "File too large (full report: ")
    assert "Traceback" not in err and "tensorstore_spec" not in err
    assert not (tmp_path / "out").exists(), "a failed merge removes what it wrote"
    log = err.split("(full report: ")[1].rstrip().rstrip(")")
    with open(log) as handle:
        report = handle.read()
    assert "Traceback" in report and "ERROR:absl:" in report, "orbax's traceback and records are in the log"
    os.remove(log)


def test_merge_cli_refuses_an_out_on_a_full_disk_before_reading_experts(
    pristine_experts, tmp_path, capsys, monkeypatch
):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    code = merge.main(merge_args(pristine_experts, tmp_path / "out"))
    assert_one_line_error(code, capsys.readouterr().err, "cannot be written (No space left on device in")
    assert not (tmp_path / "out").exists()


def test_merge_removes_the_staging_folder_of_a_killed_merge_and_nothing_else(pristine_experts, tmp_path):
    finished = crash.Process(["-c", "pass"], tmp_path / "logs")
    finished.wait()
    stale = tmp_path / ".merged.staging-dead"
    live = tmp_path / ".other.staging-live"
    unmarked = tmp_path / ".mine.staging-x"
    for folder, pid in [(stale, finished.popen.pid), (live, os.getpid()), (unmarked, None)]:
        folder.mkdir()
        (folder / "soup.bin").write_bytes(b"\0" * 64)
        if pid is not None:
            marker = {"pid": pid, "host": socket.gethostname(), "target": str(tmp_path / "merged")}
            (folder / checkpoint.STAGING_MARKER).write_text(json.dumps(marker))
    code = merge.main(merge_args(pristine_experts, tmp_path / "merged2", "--stream"))
    assert code == 0
    assert not stale.exists(), "the killed merge's staging folder is removed"
    assert live.exists() and unmarked.exists(), "a running merge's or a foreign folder is kept"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".merged2.staging-")]
