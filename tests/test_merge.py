import jax
import numpy as np
import pytest

from rs_jax import checkpoint, merge, soup


def expert(value: float) -> dict:
    return {"w": np.full((2, 3), value, np.float32), "b": np.full((3,), -value, np.float32)}


def test_merge_cli_orbax_end_to_end(tmp_path, capsys):
    for name, value in [("risky", 1.0), ("cautious", 3.0)]:
        checkpoint.save_expert(tmp_path / name, expert(value), reward=name, base_model="init@1")
    out = tmp_path / "merged"
    experts = [str(tmp_path / "risky"), str(tmp_path / "cautious")]
    code = merge.main(["--experts", *experts, "--weights", "0.3", "0.7", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    params, manifest = checkpoint.restore_expert(out, expected_base="init@1")
    np.testing.assert_allclose(np.asarray(params["w"]), 0.3 * 1.0 + 0.7 * 3.0, rtol=1e-6)
    assert manifest.config["weights"] == [0.3, 0.7]
    assert manifest.config["rewards"] == ["risky", "cautious"]


def test_merge_cli_errors_leave_disk_untouched(tmp_path, capsys):
    checkpoint.save_expert(tmp_path / "a", expert(1.0), reward="a", base_model="init@1")
    checkpoint.save_expert(tmp_path / "b", expert(2.0), reward="b", base_model="init@2")
    args = ["--experts", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]
    assert merge.main([*args, "--weights", "0.5", "0.6"]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert merge.main([*args, "--weights", "0.5", "0.5"]) == 2
    assert "base model" in capsys.readouterr().err
    assert merge.main([*args, "--weights", "1.5", "-0.5"]) == 2
    assert "allow_extrapolation" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code = merge.main(
        [
            "--experts",
            str(tmp_path / "a"),
            str(tmp_path / "a"),
            "--weights",
            "0.5",
            "0.5",
            "--out",
            str(tmp_path / "taken"),
        ]
    )
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


@pytest.mark.third_party
def test_merge_cli_hf_flax_models(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16, architectures=["GPT2LMHeadModel"]
    )
    originals = []
    for seed, name in [(0, "a"), (1, "b")]:
        model = transformers.FlaxGPT2LMHeadModel(config, seed=seed)
        model.save_pretrained(tmp_path / name)
        originals.append(model.params)
    out = tmp_path / "merged"
    assert (
        merge.main(
            [
                "--experts",
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--weights",
                "0.25",
                "0.75",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    loaded = transformers.FlaxGPT2LMHeadModel.from_pretrained(out)
    expected = soup.interpolate(originals, [0.25, 0.75])
    for got, want in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    assert (out / "soup.json").exists()
