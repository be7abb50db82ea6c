"""rs_jax.models.lora on hand-made Flax-style params (model runs are in test_causal_lm.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.models import lora

D = 8


def normal(seed, shape, scale=1.0):
    """Test data from numpy (an eager jax.random draw compiles a threefry kernel per shape)."""
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def base_params(key):
    del key
    layer = lambda i: {  # noqa: E731
        "self_attn": {"q_proj": {"kernel": normal(i, (D, D))}, "v_proj": {"kernel": normal(i + 1, (D, 4))}},
        "mlp": {"up_proj": {"kernel": normal(i + 2, (D, 16)), "bias": jnp.zeros(16)}},
        "norm": {"scale": jnp.ones(D)},
    }
    return {"model": {"layers": {"0": layer(0), "1": layer(3)}}, "lm_head": {"kernel": jnp.ones((D, 5))}}


CONFIG = lora.LoraConfig(rank=2, alpha=4.0, target_modules=("q_proj", "v_proj"))


def trained(lora_params, seed):
    """Random non-zero A and B, as after some training."""
    leaves, treedef = jax.tree.flatten(lora_params)
    return jax.tree.unflatten(treedef, [normal(seed * 100 + i, x.shape) for i, x in enumerate(leaves)])


def test_init_shapes_and_zero_b(key):
    params = base_params(key)
    factors = lora.init_lora(params, CONFIG, key)
    q = factors["model"]["layers"]["0"]["self_attn"]["q_proj"]
    v = factors["model"]["layers"]["1"]["self_attn"]["v_proj"]
    assert q["lora_a"].shape == (D, 2) and q["lora_b"].shape == (2, D)
    assert v["lora_a"].shape == (D, 2) and v["lora_b"].shape == (2, 4)
    assert float(jnp.abs(q["lora_a"]).max()) <= 1 / np.sqrt(D) and float(jnp.abs(q["lora_a"]).max()) > 0
    assert all(float(jnp.abs(f["lora_b"]).max()) == 0 for f in (q, v))
    assert set(jax.tree.leaves(jax.tree.map(lambda x: x.dtype, factors))) == {jnp.dtype("float32")}
    # B = 0 ⇒ the merged params are the base, exactly.
    merged = lora.apply_lora(params, factors, CONFIG)
    jax.tree.map(np.testing.assert_array_equal, merged, params)


def test_only_target_kernels_change(key):
    params = base_params(key)
    factors = trained(lora.init_lora(params, CONFIG, key), 7)
    merged = lora.apply_lora(params, factors, CONFIG)
    changed = {
        jax.tree_util.keystr(path)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(merged), jax.tree.leaves(params))
        if not np.array_equal(a, b)
    }
    assert changed == {
        f"['model']['layers']['{i}']['self_attn']['{m}']['kernel']"
        for i in "01"
        for m in ("q_proj", "v_proj")
    }
    q = factors["model"]["layers"]["0"]["self_attn"]["q_proj"]
    expected = (
        params["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"] + 2.0 * q["lora_a"] @ q["lora_b"]
    )
    np.testing.assert_allclose(
        merged["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"], expected, atol=1e-5
    )
    # Untouched leaves are the base's own arrays (no copy).
    assert merged["lm_head"]["kernel"] is params["lm_head"]["kernel"]


def test_dotted_target_and_no_match_error(key):
    params = base_params(key)
    only_layer_1 = lora.LoraConfig(rank=1, alpha=1.0, target_modules=("1.self_attn.q_proj",))
    factors = lora.init_lora(params, only_layer_1, key)
    assert list(factors["model"]["layers"]) == ["1"]
    with pytest.raises(ValueError, match=r"No kernel matches.*up_proj"):
        lora.init_lora(params, lora.LoraConfig(target_modules=("c_attn",)), key)


def test_out_in_layout_gpt2_conv1d(key):
    # transformers' Flax GPT-2 Conv1D stores (d_out, d_in): c_attn maps D -> 3D.
    params = {
        "h": {
            "0": {
                "attn": {"c_attn": {"kernel": jnp.zeros((3 * D, D))}, "c_proj": {"kernel": jnp.zeros((D, D))}}
            }
        }
    }
    config = lora.LoraConfig(rank=2, alpha=2.0, target_modules=("c_attn",))
    factors = trained(lora.init_lora(params, config, key), 1)
    c_attn = factors["h"]["0"]["attn"]["c_attn"]
    assert c_attn["lora_a"].shape == (D, 2) and c_attn["lora_b"].shape == (2, 3 * D)
    merged = lora.apply_lora(params, factors, config)["h"]["0"]["attn"]["c_attn"]["kernel"]
    np.testing.assert_allclose(merged, (c_attn["lora_a"] @ c_attn["lora_b"]).T, atol=1e-5)


def test_param_count_and_fraction(key):
    params = base_params(key)
    factors = lora.init_lora(params, CONFIG, key)
    assert lora.lora_param_count(factors) == 2 * ((D * 2 + 2 * D) + (D * 2 + 2 * 4))
    n_base = sum(x.size for x in jax.tree.leaves(params))
    assert lora.trainable_fraction(factors, params) == pytest.approx(lora.lora_param_count(factors) / n_base)


def test_dropout_drops_input_rows_of_a(key):
    params = base_params(key)
    config = lora.LoraConfig(rank=2, alpha=4.0, dropout=0.5, target_modules=("q_proj",))
    factors = trained(lora.init_lora(params, config, key), 1)
    no_drop = lora.apply_lora(params, factors, config)
    dropped = lora.apply_lora(params, factors, config, dropout_key=jax.random.key(1))
    again = lora.apply_lora(params, factors, config, dropout_key=jax.random.key(1))
    jax.tree.map(np.testing.assert_array_equal, dropped, again)
    path = ("model", "layers", "0", "self_attn", "q_proj")
    base_w = params["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"]
    q = factors["model"]["layers"]["0"]["self_attn"]["q_proj"]
    delta = dropped["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"] - base_w
    rows_zero = np.all(np.abs(np.asarray(delta)) < 1e-6, axis=1)
    assert 0 < rows_zero.sum() < D, path
    kept = ~rows_zero
    np.testing.assert_allclose(delta[kept], 2.0 * 2.0 * (q["lora_a"] @ q["lora_b"])[kept], atol=1e-4)
    assert not np.array_equal(
        no_drop["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"], delta + base_w
    )


def test_delta_soup_is_exact_and_factor_soup_is_not(key):
    params = base_params(key)
    init = lora.init_lora(params, CONFIG, key)
    experts = [trained(init, i) for i in (11, 12, 13)]
    lambdas = jnp.array([0.2, 0.3, 0.5])
    merged_experts = [lora.apply_lora(params, e, CONFIG) for e in experts]
    expected = jax.tree.map(lambda *ws: sum(w * leaf for w, leaf in zip(lambdas, ws)), *merged_experts)

    delta_soup = lora.interpolate_lora(experts, lambdas, CONFIG, mode="delta")
    assert delta_soup["model"]["layers"]["0"]["self_attn"]["q_proj"]["lora_a"].shape == (D, 3 * 2)
    merged_delta = lora.apply_lora(params, delta_soup, CONFIG)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6), merged_delta, expected)

    factor_soup = lora.interpolate_lora(experts, lambdas, CONFIG, mode="factors")
    assert factor_soup["model"]["layers"]["0"]["self_attn"]["q_proj"]["lora_a"].shape == (D, 2)
    merged_factors = lora.apply_lora(params, factor_soup, CONFIG)
    q = ("model", "layers", "0", "self_attn", "q_proj", "kernel")
    get = lambda tree: tree[q[0]][q[1]][q[2]][q[3]][q[4]][q[5]]  # noqa: E731
    assert np.abs(np.asarray(get(merged_factors) - get(expected))).max() > 1e-2

    for vertex in range(3):
        one_hot = jnp.eye(3)[vertex]
        for mode in ("factors", "delta"):
            at_vertex = lora.apply_lora(
                params, lora.interpolate_lora(experts, one_hot, CONFIG, mode=mode), CONFIG
            )
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6),
                at_vertex,
                merged_experts[vertex],
            )


def test_user_errors(key):
    params = base_params(key)
    factors = lora.init_lora(params, CONFIG, key)
    with pytest.raises(ValueError, match="rank"):
        lora.LoraConfig(rank=0)
    with pytest.raises(ValueError, match="dropout"):
        lora.LoraConfig(dropout=1.0)
    with pytest.raises(ValueError, match="mode"):
        lora.interpolate_lora([factors, factors], [0.5, 0.5], CONFIG, mode="average")
    with pytest.raises(ValueError, match="sum to 1"):
        lora.interpolate_lora([factors, factors], [0.5, 0.6], CONFIG)
    with pytest.raises(ValueError, match="rank 2, the config says 4"):
        lora.interpolate_lora([factors, factors], [0.5, 0.5], lora.LoraConfig(rank=4))
    other = {"model": {"layers": {"0": {"self_attn": {"q_proj": {"kernel": jnp.zeros((D, D))}}}}}}
    with pytest.raises(ValueError, match="no kernel in the base"):
        lora.apply_lora(other, factors, CONFIG)
    bad_v = {"v_proj": {"lora_a": jnp.zeros((D, 2)), "lora_b": jnp.zeros((2, D))}}  # v_proj maps D -> 4
    with pytest.raises(ValueError, match="needs A"):
        lora.apply_lora(params, {"model": {"layers": {"0": {"self_attn": bad_v}}}}, CONFIG)


def test_grad_flows_to_lora_only_under_jit(key):
    params = base_params(key)
    factors = trained(lora.init_lora(params, CONFIG, key), 2)
    x = jnp.ones((3, D))

    @jax.jit
    def loss(lora_params):
        merged = lora.apply_lora(params, lora_params, CONFIG)
        h = x @ merged["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"]
        return jnp.sum(h**2)

    grads = jax.grad(loss)(factors)
    assert float(jnp.abs(grads["model"]["layers"]["0"]["self_attn"]["q_proj"]["lora_b"]).sum()) > 0
    assert float(jnp.abs(grads["model"]["layers"]["1"]["self_attn"]["q_proj"]["lora_b"]).sum()) == 0
