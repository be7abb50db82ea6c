import os
import textwrap

import crash
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import checkpoint


def params_of(value: float) -> dict:
    return {
        "dense": {"kernel": jnp.full((3, 4), value), "bias": jnp.zeros(4)},
        "head": jnp.full((4,), -value),
    }


def test_round_trip_with_manifest(tmp_path):
    params = params_of(1.5)
    saved = checkpoint.save_expert(
        tmp_path / "risky", params, reward="risky", base_model="base@abc", step=7, config={"lr": 1e-3}
    )
    restored, manifest = checkpoint.restore_expert(tmp_path / "risky", expected_base="base@abc")
    assert manifest == saved
    assert (manifest.reward, manifest.step, manifest.param_count, manifest.dtype) == (
        "risky",
        7,
        20,
        "float32",
    )
    assert manifest.config == {"lr": 1e-3}
    np.testing.assert_array_equal(
        np.asarray(restored["dense"]["kernel"]), np.asarray(params["dense"]["kernel"])
    )
    assert checkpoint.latest_step(tmp_path / "risky") == 7


def test_refuses_foreign_base(tmp_path):
    checkpoint.save_expert(tmp_path / "a", params_of(1.0), reward="r1", base_model="base@one")
    checkpoint.save_expert(tmp_path / "b", params_of(2.0), reward="r2", base_model="base@two")
    with pytest.raises(ValueError, match="fine-tuned from base model 'base@two', not 'base@one'"):
        checkpoint.restore_experts([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="base@one"):
        checkpoint.save_expert(tmp_path / "a", params_of(3.0), reward="r1", base_model="base@two", step=1)


def test_refuses_existing_step_and_keeps_it(tmp_path):
    checkpoint.save_expert(tmp_path / "a", params_of(1.0), reward="r", base_model="b", step=3)
    with pytest.raises(ValueError, match="already has step 3"):
        checkpoint.save_expert(tmp_path / "a", params_of(9.0), reward="r", base_model="b", step=3)
    restored, _ = checkpoint.restore_expert(tmp_path / "a")
    assert float(restored["dense"]["kernel"][0, 0]) == 1.0


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="No expert checkpoint"):
        checkpoint.restore_expert(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="JSON-serializable"):
        checkpoint.save_expert(
            tmp_path / "x", params_of(1.0), reward="r", base_model="b", config={"f": object()}
        )
    assert not (tmp_path / "x").exists() or checkpoint.latest_step(tmp_path / "x") is None

    checkpoint.save_expert(tmp_path / "m", params_of(1.0), reward="r", base_model="b")
    manifest_dir = tmp_path / "m" / "0" / "manifest"
    for name in os.listdir(manifest_dir):
        os.remove(manifest_dir / name)
    with pytest.raises(ValueError, match="no readable manifest"):
        checkpoint.restore_expert(tmp_path / "m")

    checkpoint.save_expert(tmp_path / "c", params_of(1.0), reward="r", base_model="b")
    data_files = [
        os.path.join(root, name)
        for root, _, names in os.walk(tmp_path / "c" / "0" / "params")
        for name in names
        if "/d/" in os.path.join(root, name) + "/"
    ]
    assert data_files
    for path in data_files:
        with open(path, "r+b") as handle:
            handle.truncate(5)
    with pytest.raises(ValueError, match=r"unreadable|corrupt"):
        checkpoint.restore_expert(tmp_path / "c")


CRASHING_WRITER = textwrap.dedent(
    """
    import sys, jax.numpy as jnp
    from rs_jax import checkpoint
    directory = sys.argv[1]
    checkpoint.save_expert(directory, {"w": jnp.full((8,), 1.0)}, reward="r", base_model="b", step=1)
    print("saved 1", flush=True)
    big = {f"w{i}": jnp.full((2_000_000,), 2.0) for i in range(8)}  # 64 MB: killed mid-write
    for step in range(2, 50):
        checkpoint.save_expert(directory, big, reward="r", base_model="b", step=step)
    """
)


def test_crash_mid_save_leaves_a_readable_checkpoint(tmp_path):
    directory = tmp_path / "expert"
    writer = crash.Process(["-c", CRASHING_WRITER, str(directory)], tmp_path / "logs")
    # Kill the writer while a step after the first is being written (its temporary folder exists).
    writer.kill_when(lambda: writer.printed("saved 1") and crash.writing(directory))
    step = checkpoint.latest_step(directory)
    assert step is not None and step >= 1
    restored, manifest = checkpoint.restore_expert(directory)
    assert manifest.step == step
    expected = 1.0 if step == 1 else 2.0
    assert all(float(leaf[0]) == expected for leaf in restored.values())


def test_fingerprint_identifies_params():
    assert checkpoint.fingerprint(params_of(1.0)) == checkpoint.fingerprint(params_of(1.0))
    assert checkpoint.fingerprint(params_of(1.0)) != checkpoint.fingerprint(params_of(1.0 + 1e-6))
