"""Merges of Hugging Face PyTorch-format safetensors directories and PEFT LoRA adapters."""

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import stream_memory
from safetensors.numpy import load_file, save_file

from rs_jax import hf_merge, merge, merge_rules, soup
from rs_jax import safetensors_io as st
from rs_jax.models import hf

MB = 2**20


def write_model(directory, tensors: dict, shards: int = 1, config: dict | None = None) -> str:
    """A HF directory with config.json, a tokenizer file and the tensors in ``shards`` files."""
    os.makedirs(directory)
    with open(os.path.join(directory, "config.json"), "w") as handle:
        json.dump(config or {"model_type": "toy"}, handle)
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as handle:
        json.dump({"model_max_length": 8}, handle)
    names = list(tensors)
    if shards == 1:
        save_file(tensors, os.path.join(directory, st.MODEL_WEIGHTS), metadata={"format": "pt"})
        return str(directory)
    weight_map = {}
    for index, part in enumerate(np.array_split(np.arange(len(names)), shards)):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file(
            {names[i]: tensors[names[i]] for i in part}, os.path.join(directory, file), {"format": "pt"}
        )
        weight_map.update({names[i]: file for i in part})
    with open(os.path.join(directory, st.MODEL_INDEX), "w") as handle:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, handle)
    return str(directory)


def read_model(directory) -> dict:
    layout = st.read_layout(directory)
    with st.TensorReader(layout) as reader:
        return {name: reader.read(name) for name in layout.tensors}


def toy(seed: int, dtype=np.float32) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "a.weight": rng.normal(size=(4, 3)).astype(dtype),
        "b.weight": rng.normal(size=(5,)).astype(dtype),
        "c.bias": rng.normal(size=(2, 2, 2)).astype(dtype),
        "position_ids": np.arange(6, dtype=np.int64),
    }


def run(*args: str) -> int:
    return merge.main([str(arg) for arg in args])


def test_sharded_bf16_experts_merge_tensor_by_tensor_into_the_same_shards(tmp_path):
    experts = [toy(0, ml_dtypes.bfloat16), toy(1, ml_dtypes.bfloat16)]
    write_model(tmp_path / "e0", experts[0], shards=2)
    write_model(tmp_path / "e1", experts[1])
    assert (
        run("--experts", tmp_path / "e0", tmp_path / "e1", "--weights", 0.3, 0.7, "--out", tmp_path / "m")
        == 0
    )
    assert sorted(os.listdir(tmp_path / "m")) == sorted([*os.listdir(tmp_path / "e0"), "soup.json"])
    index = json.loads((tmp_path / "m" / st.MODEL_INDEX).read_text())
    assert index["weight_map"] == json.loads((tmp_path / "e0" / st.MODEL_INDEX).read_text())["weight_map"]
    merged = read_model(tmp_path / "m")
    for name, tensor in merged.items():
        if name == "position_ids":
            np.testing.assert_array_equal(tensor, experts[0][name])
            continue
        assert tensor.dtype == ml_dtypes.bfloat16
        want = 0.3 * experts[0][name].astype(np.float32) + 0.7 * experts[1][name].astype(np.float32)
        np.testing.assert_array_equal(tensor, want.astype(ml_dtypes.bfloat16))
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in merged.values())


def test_task_arithmetic_with_dtype_and_config_file(tmp_path):
    base, experts = toy(9), [toy(0), toy(1)]
    write_model(tmp_path / "base", base)
    for i, tensors in enumerate(experts):
        write_model(tmp_path / f"e{i}", tensors, shards=1 + i)
    config = tmp_path / "merge.yml"
    config.write_text(
        f"merge_method: task_arithmetic\nbase_model: {tmp_path / 'base'}\nmodels:\n"
        f"  - model: {tmp_path / 'e0'}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {tmp_path / 'e1'}\n    parameters: {{weight: 1.0}}\n"
        f"parameters: {{scale: 0.8}}\ndtype: float16\nout: {tmp_path / 'm'}\n"
    )
    assert run("--config", config) == 0
    merged = read_model(tmp_path / "m")
    for name in ("a.weight", "c.bias"):
        vector = 0.5 * (experts[0][name] - base[name]) + 1.0 * (experts[1][name] - base[name])
        np.testing.assert_allclose(merged[name], (base[name] + 0.8 * vector).astype(np.float16), rtol=1e-3)
        assert merged[name].dtype == np.float16
    assert json.loads((tmp_path / "m" / "soup.json").read_text())["scale"] == 0.8


def fake_dare(experts, weights, *, base, drop_probability, key, scale=1.0):
    """A DARE-shaped rule whose output shows the key it got."""
    keep = jax.random.bernoulli(key, 1.0 - drop_probability, base.shape)
    return base + scale * sum(w * keep * (e - base) for w, e in zip(weights, experts))


def test_dare_keys_depend_on_seed_and_tensor_name_not_on_sharding(tmp_path, monkeypatch):
    monkeypatch.setitem(merge_rules.RULES, "dare", fake_dare)
    big = {f"t{i}": np.ones((64,), np.float32) * i for i in range(4)}
    write_model(tmp_path / "base", {k: np.zeros_like(v) for k, v in big.items()})
    for shards in (1, 2):
        write_model(tmp_path / f"e{shards}", big, shards=shards)
    outputs = []
    for shards, seed in [(1, 0), (2, 0), (1, 1)]:
        out = tmp_path / f"m{shards}-{seed}"
        args = ["--method", "dare", "--drop-probability", 0.5, "--seed", seed, "--base", tmp_path / "base"]
        e = tmp_path / f"e{shards}"
        assert run(*args, "--experts", e, e, "--weights", 0.5, 0.5, "--out", out) == 0
        outputs.append(read_model(out))
    for name in big:
        np.testing.assert_array_equal(outputs[0][name], outputs[1][name])
    assert any(not np.array_equal(outputs[0][n], outputs[2][n]) for n in big)
    masks = [outputs[0][f"t{i}"] != 0 for i in (1, 2)]
    assert not np.array_equal(*masks), "two tensors got the same mask"


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    write_model(tmp_path / "e0", toy(0))
    write_model(tmp_path / "e1", toy(1))
    renamed = dict(toy(1))
    renamed["d.weight"] = renamed.pop("a.weight")
    write_model(tmp_path / "renamed", renamed)
    write_model(tmp_path / "reshaped", {**toy(1), "a.weight": np.zeros((3, 4), np.float32)})
    write_model(tmp_path / "sharded", toy(1), shards=2)
    os.remove(tmp_path / "sharded" / "model-00002-of-00002.safetensors")
    cases = {
        "renamed": "lacks tensors",
        "reshaped": "is (3, 4)",
        "sharded": "lacks model-00002-of-00002.safetensors",
    }
    for other, message in cases.items():
        code = run(
            "--experts", tmp_path / "e0", tmp_path / other, "--weights", 0.5, 0.5, "--out", tmp_path / "o"
        )
        error = capsys.readouterr().err
        assert code == 2 and message in error and error.count("\n") == 1, error
    for args, message in [
        (["--method", "task_arithmetic"], "give --base"),
        (["--method", "nope"], "Unknown merge method"),
        (["--base", tmp_path / "e1"], "takes no --base"),
        (["--density", 0.5], "takes no density"),
    ]:
        code = run(
            "--experts",
            tmp_path / "e0",
            tmp_path / "e1",
            "--weights",
            0.5,
            0.5,
            "--out",
            tmp_path / "o",
            *args,
        )
        error = capsys.readouterr().err
        assert code == 2 and message in error and error.count("\n") == 1, error
    config = tmp_path / "bad.yml"
    config.write_text(
        f"models: [{{model: {tmp_path / 'e0'}, parameters: {{weight: 1}}}}]\nmerge_methd: linear\n"
    )
    assert run("--config", config) == 2
    assert "unknown key 'merge_methd'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert [p for p in os.listdir(tmp_path) if "staging" in p] == []


# --------------------------------------------------------------------------- PEFT adapters


def write_adapter(directory, factors: dict, *, r: int, alpha: float, rslora=False, base="org/base") -> str:
    os.makedirs(directory)
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": base,
        "r": r,
        "lora_alpha": alpha,
        "use_rslora": rslora,
        "target_modules": sorted({m.split(".")[-1] for m in factors}),
        "fan_in_fan_out": False,
        "bias": "none",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    return str(directory)


def random_factors(seed: int, modules, r: int, d_in: int = 3, d_out: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    return {
        m: (rng.normal(size=(r, d_in)).astype(np.float32), rng.normal(size=(d_out, r)).astype(np.float32))
        for m in modules
    }


def test_lora_adapters_merge_exactly_into_the_base_and_as_one_cat_adapter(tmp_path, capsys):
    base = toy(9)
    write_model(tmp_path / "base", base)
    f0 = random_factors(0, ["a"], r=2)
    f1 = random_factors(1, ["a"], r=4)
    write_adapter(tmp_path / "l0", f0, r=2, alpha=4.0)
    write_adapter(tmp_path / "l1", f1, r=4, alpha=8.0, rslora=True)
    s0, s1 = 4.0 / 2, 8.0 / np.sqrt(4)
    delta = 0.25 * s0 * f0["a"][1] @ f0["a"][0] + 0.75 * s1 * f1["a"][1] @ f1["a"][0]
    adapters = [tmp_path / "l0", tmp_path / "l1"]
    assert (
        run(
            "--experts",
            *adapters,
            "--weights",
            0.25,
            0.75,
            "--base",
            tmp_path / "base",
            "--out",
            tmp_path / "m",
        )
        == 0
    )
    merged = read_model(tmp_path / "m")
    np.testing.assert_allclose(merged["a.weight"], base["a.weight"] + delta, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(merged["c.bias"], base["c.bias"])
    assert (tmp_path / "m" / "config.json").exists()

    assert run("--experts", *adapters, "--weights", 0.25, 0.75, "--out", tmp_path / "cat") == 0
    config = json.loads((tmp_path / "cat" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (6, 6, False)
    cat = load_file(str(tmp_path / "cat" / "adapter_model.safetensors"))
    a, b = cat["base_model.model.a.lora_A.weight"], cat["base_model.model.a.lora_B.weight"]
    assert a.shape == (6, 3) and b.shape == (4, 6)
    np.testing.assert_allclose(b @ a, delta, rtol=1e-5, atol=1e-6)

    write_adapter(tmp_path / "l2", random_factors(2, ["a"], r=2), r=2, alpha=4.0, base="org/other")
    code = run("--experts", tmp_path / "l0", tmp_path / "l2", "--weights", 0.5, 0.5, "--out", tmp_path / "x")
    assert code == 2 and "different bases" in capsys.readouterr().err
    code = run(
        "--experts", *adapters, "--weights", 0.5, 0.5, "--lora-mode", "factors", "--out", tmp_path / "x"
    )
    assert code == 2 and "one rank and scale" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_lora_factors_mode_averages_a_and_b(tmp_path):
    f0, f1 = random_factors(0, ["a", "c"], r=2), random_factors(1, ["a", "c"], r=2)
    adapters = [write_adapter(tmp_path / f"l{i}", f, r=2, alpha=2.0) for i, f in enumerate([f0, f1])]
    assert (
        run("--experts", *adapters, "--weights", 0.4, 0.6, "--lora-mode", "factors", "--out", tmp_path / "m")
        == 0
    )
    merged = load_file(str(tmp_path / "m" / "adapter_model.safetensors"))
    for module in ("a", "c"):
        for index, factor in enumerate(("lora_A", "lora_B")):
            want = 0.4 * f0[module][index] + 0.6 * f1[module][index]
            np.testing.assert_allclose(merged[f"base_model.model.{module}.{factor}.weight"], want, rtol=1e-6)
    assert json.loads((tmp_path / "m" / "adapter_config.json").read_text())["r"] == 2


# --------------------------------------------------------------------------- a real architecture


def llama_pytorch_tensors(params: dict) -> dict:
    """transformers' PyTorch names of FlaxLlamaForCausalLM params (kernels transposed)."""
    tensors = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [entry.key for entry in path]
        array = np.asarray(leaf)
        if names[-1] == "kernel":
            array = array.T
        tensors[".".join([*names[:-1], "weight"])] = np.ascontiguousarray(array)
    return tensors


@pytest.mark.third_party
@pytest.mark.usefixtures("fast_compile")
def test_merged_llama_loads_in_transformers_with_the_logits_of_the_merged_params(tmp_path):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        architectures=["LlamaForCausalLM"],
    )
    shapes = transformers.FlaxLlamaForCausalLM(config, _do_init=False).params_shape_tree
    rng = np.random.default_rng(0)
    params = [
        jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32), shapes) for _ in range(2)
    ]
    for i, expert in enumerate(params):
        write_model(tmp_path / f"e{i}", llama_pytorch_tensors(expert), config=config.to_dict())
    assert (
        run("--experts", tmp_path / "e0", tmp_path / "e1", "--weights", 0.3, 0.7, "--out", tmp_path / "m")
        == 0
    )
    model, loaded = hf.load_flax_pretrained(tmp_path / "m")
    tokens = np.array([[1, 5, 9, 3]], np.int32)
    logits = jax.jit(lambda p: model(tokens, params=p).logits)
    np.testing.assert_allclose(
        np.asarray(logits(loaded)),
        np.asarray(logits(soup.interpolate(params, [0.3, 0.7]))),
        rtol=1e-5,
        atol=1e-5,
    )


# --------------------------------------------------------------------------- memory


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssAnon from /proc (Linux)")
def test_merge_stays_under_a_memory_cap_smaller_than_one_expert(tmp_path):
    """3 experts × 48 MB (48 tensors of 1 MB, 2 shards); cap 32 MB, below one expert."""
    directories = []
    for index in range(3):
        tensors = {
            f"layer{j:02d}.weight": np.full((1024, 256), index + j / 48, np.float32) for j in range(48)
        }
        directories.append(write_model(tmp_path / f"e{index}", tensors, shards=2))
        del tensors
    cap = 32 * MB
    peak = stream_memory.run_probe("hf_merge_memory.py", str(tmp_path / "scratch"), *directories)["merged"]
    print(f"peak RssAnon growth of the safetensors merge: {peak / MB:.1f} MB")
    assert peak < cap, f"the merge should stay under {cap / MB:.0f} MB, took {peak / MB:.1f} MB"
    merged = read_model(tmp_path / "scratch" / "merged")
    np.testing.assert_allclose(merged["layer47.weight"], 1.0 + 47 / 48, rtol=1e-6)
    assert hf_merge.is_safetensors_model(tmp_path / "scratch" / "merged")
