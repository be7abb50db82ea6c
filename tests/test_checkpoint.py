import os
import re
import textwrap

import crash
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rs_jax import checkpoint, merge


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


def restore_unchecked(directory) -> dict:
    """The params of step 0 as orbax reads them, without the manifest's checks."""
    with ocp.CheckpointManager(os.path.abspath(directory), item_names=checkpoint.ITEMS) as manager:
        restored = manager.restore(0, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
    return jax.tree.map(np.asarray, restored.params)


def flip_a_value_bit(directory, params: dict) -> str:
    """Flips one bit of a stored value of the expert at ``directory`` (step 0) so that orbax still
    reads it without error but one leaf's values change; returns that leaf's name."""
    data_files = [
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(directory, "0", "params"))
        for name in names
        if os.sep + "d" + os.sep in os.path.join(root, name)
    ]
    largest = max(data_files, key=os.path.getsize)
    with open(largest, "rb") as handle:
        original = handle.read()
    size = len(original)
    for offset in range(size // 2, size, 101):  # the middle of the largest file: a leaf's values
        corrupted = bytearray(original)
        corrupted[offset] ^= 0x10
        with open(largest, "wb") as handle:
            handle.write(corrupted)
        try:
            restored = restore_unchecked(directory)
        except Exception:  # the flip broke the file's framing: orbax notices; try another byte
            continue
        changed = [name for name in params if not np.array_equal(restored[name], params[name])]
        if len(changed) == 1:
            return changed[0]
    raise AssertionError("no single-bit flip changed exactly one leaf")


@pytest.fixture
def flipped_expert(tmp_path):
    """An expert whose leaf "big" has one bit flipped on disk, and a sound expert beside it."""
    rng = np.random.default_rng(0)
    params = {"big": rng.normal(size=(64, 64)).astype(np.float32), "small": np.ones(3, np.float32)}
    checkpoint.save_expert(tmp_path / "sound", params, reward="a", base_model="b")
    checkpoint.save_expert(tmp_path / "flipped", params, reward="b", base_model="b")
    assert flip_a_value_bit(tmp_path / "flipped", params) == "big"
    return tmp_path


def test_a_flipped_bit_in_a_value_is_detected_at_restore(flipped_expert):
    with pytest.raises(ValueError, match=r"flipped step 0: leaf big does not match its checksum"):
        checkpoint.restore_expert(flipped_expert / "flipped")
    checkpoint.restore_expert(flipped_expert / "sound")


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_a_flipped_bit_in_a_value_is_refused_by_the_merge_cli(flipped_expert, stream, capsys):
    experts = [str(flipped_expert / "sound"), str(flipped_expert / "flipped")]
    out = flipped_expert / "merged"
    code = merge.main(["--experts", *experts, "--weights", "0.5", "0.5", "--out", str(out), stream])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "leaf big does not match its checksum" in err
    assert not out.exists() or not any(out.iterdir())


def test_checksums_are_recorded_per_leaf_path(tmp_path):
    manifest = checkpoint.save_expert(tmp_path / "e", params_of(1.0), reward="r", base_model="b")
    assert sorted(manifest.checksums) == ["dense/bias", "dense/kernel", "head"]
    assert manifest.checksums == checkpoint.leaf_checksums(params_of(1.0))
    assert manifest.checksums["head"] != checkpoint.leaf_checksums(params_of(2.0))["head"]
    # dtype and shape are part of a leaf's checksum, not only its bytes.
    assert checkpoint.leaf_checksum(np.zeros(4, np.float32)) != checkpoint.leaf_checksum(
        np.zeros(4, np.int32)
    )
    assert checkpoint.leaf_checksum(np.zeros(4)) != checkpoint.leaf_checksum(np.zeros((2, 2)))


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_experts_adapting_different_frozen_bases_are_refused(tmp_path, stream, capsys):
    # Same LoRA init (base_model) but fine-tuned on top of two different pre-trained LMs.
    for name, frozen in [("a", params_of(1.0)), ("b", params_of(2.0))]:
        checkpoint.save_expert(
            tmp_path / name,
            {"lora": np.zeros(3, np.float32)},
            reward=name,
            base_model="lora-init@0",
            base_fingerprint=checkpoint.fingerprint(frozen),
        )
    first, second = checkpoint.fingerprint(params_of(1.0))[:16], checkpoint.fingerprint(params_of(2.0))[:16]
    message = f"{tmp_path / 'b'} adapts frozen base {second} but {tmp_path / 'a'} adapts {first}"
    with pytest.raises(ValueError, match=re.escape(message)):
        checkpoint.restore_experts([tmp_path / "a", tmp_path / "b"])
    out = tmp_path / "merged"
    args = ["--experts", str(tmp_path / "a"), str(tmp_path / "b"), "--weights", "0.5", "0.5"]
    assert merge.main([*args, "--out", str(out), stream]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="adapts frozen base"):
        checkpoint.save_expert(
            tmp_path / "a", {"lora": np.ones(3, np.float32)}, reward="a", base_model="lora-init@0", step=1
        )


def test_a_version_1_manifest_is_read_without_checksums(tmp_path):
    old = {"reward": "r", "base_model": "b", "step": 0, "config": {}, "param_count": 20, "dtype": "float32"}
    with ocp.CheckpointManager(os.path.abspath(tmp_path / "old"), item_names=checkpoint.ITEMS) as manager:
        manager.save(
            0,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params_of(1.0)),
                manifest=ocp.args.JsonSave({**old, "version": 1}),
            ),
        )
        manager.wait_until_finished()
    restored, manifest = checkpoint.restore_expert(tmp_path / "old")
    assert (manifest.version, manifest.checksums, manifest.base_fingerprint) == (1, {}, "")
    np.testing.assert_array_equal(np.asarray(restored["head"]), np.full(4, -1.0))


def test_bfloat16_and_scalar_leaves_are_checksummed():
    leaves = {"b": jnp.ones((3,), jnp.bfloat16), "s": np.float32(2.0), "i": np.arange(3, dtype=np.int8)}
    sums = checkpoint.leaf_checksums(leaves)
    assert sums == checkpoint.leaf_checksums(jax.tree.map(np.asarray, leaves))
    assert sums["b"] != checkpoint.leaf_checksum(jnp.ones((3,), jnp.float16))
