"""rs_jax.models.causal_lm against transformers' own Flax LLaMA / GPT-2 on tiny random configs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.models import causal_lm, lora

pytestmark = pytest.mark.third_party

VOCAB, PROMPT, NEW, PAD = 100, 6, 8, 0
NO_EOS = -1  # never sampled: the rows run to max_new_tokens


def prompts():
    """Three left-padded prompts of lengths 3, 5 and 6."""
    ids = jnp.array([[0, 0, 0, 5, 6, 7], [0, 11, 12, 13, 14, 15], [21, 22, 23, 24, 25, 26]], jnp.int32)
    mask = (jnp.arange(PROMPT)[None, :] >= jnp.array([3, 1, 0])[:, None]).astype(jnp.int32)
    return ids, mask


class Policy:
    """A model with its jitted functions, compiled once per test module (eos_id is traced)."""

    def __init__(self, model, params):
        self.model, self.params = model, params
        gen = functools.partial(causal_lm.generate, model, max_new_tokens=NEW, pad_id=PAD)
        self.greedy = jax.jit(
            lambda p, ids, m, eos: gen(p, ids, m, jax.random.key(0), eos_id=eos, greedy=True)
        )
        self.sample = jax.jit(lambda p, ids, m, key, eos: gen(p, ids, m, key, eos_id=eos))
        self.outputs = jax.jit(functools.partial(causal_lm.sequence_outputs, model))
        hf_gen = functools.partial(model.generate, max_new_tokens=NEW, do_sample=False, pad_token_id=PAD)
        # (B, PROMPT + NEW) prompt and greedy response
        self.hf_greedy = jax.jit(
            lambda p, ids, m, eos: hf_gen(ids, attention_mask=m, params=p, eos_token_id=eos).sequences,
            static_argnums=3,
        )


@pytest.fixture(scope="module")
def llama():
    return Policy(*causal_lm.tiny_llama(VOCAB, jax.random.key(0), max_position_embeddings=64))


@pytest.fixture(scope="module")
def gpt2():
    import transformers

    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    return Policy(*causal_lm.init_causal_lm(config, jax.random.key(1), method="fast"))


def eos_seen_mid_sequence(tokens):
    """A token that the first row emits at step 2 (so that an EOS really happens mid-sequence)."""
    return int(tokens[0, 2])


def check_structure(out, eos):
    tokens, mask, log_probs = (np.asarray(x) for x in (out.tokens, out.mask, out.log_probs))
    assert tokens.shape == mask.shape == log_probs.shape == (3, NEW)
    for row_tokens, row_mask in zip(tokens, mask):
        hits = np.flatnonzero(row_tokens == eos)
        end = hits[0] + 1 if hits.size else NEW
        assert row_mask[:end].all() and not row_mask[end:].any()
        assert (row_tokens[end:] == PAD).all()
    assert (log_probs[~mask] == 0).all()


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_greedy_matches_transformers_generate(name, request):
    policy = request.getfixturevalue(name)
    ids, mask = prompts()
    free = policy.greedy(policy.params, ids, mask, NO_EOS)
    eos = eos_seen_mid_sequence(free.tokens)
    ours = policy.greedy(policy.params, ids, mask, eos)
    theirs = policy.hf_greedy(policy.params, ids, mask, eos)[:, PROMPT:]  # the response
    np.testing.assert_array_equal(ours.tokens, theirs)
    assert int(ours.mask[0].sum()) <= 3  # row 0 stopped at its EOS
    check_structure(ours, eos)
    # The cache-free forward pass recomputes the log-probs (also checked on samples below).
    logits, _ = policy.outputs(policy.params, ids, mask, ours.tokens, ours.mask)
    np.testing.assert_allclose(
        causal_lm.response_log_probs(logits, ours.tokens, ours.mask), ours.log_probs, atol=1e-4
    )


def test_sampled_log_probs_match_teacher_forcing(llama):
    policy = llama
    ids, mask = prompts()
    free = policy.sample(policy.params, ids, mask, jax.random.key(5), NO_EOS)
    eos = eos_seen_mid_sequence(free.tokens)
    out = policy.sample(policy.params, ids, mask, jax.random.key(5), eos)
    check_structure(out, eos)
    assert not bool(out.mask[0, 3:].any())
    logits, hidden = policy.outputs(policy.params, ids, mask, out.tokens, out.mask)
    assert logits.shape == (3, NEW, VOCAB) and hidden.shape == (3, NEW, 32)
    recomputed = causal_lm.response_log_probs(logits, out.tokens, out.mask)
    np.testing.assert_allclose(recomputed, out.log_probs, atol=1e-4)
    # Same key, same samples.
    np.testing.assert_array_equal(
        policy.sample(policy.params, ids, mask, jax.random.key(5), eos).tokens, out.tokens
    )


@pytest.mark.parametrize("tied", [True, False])
def test_response_logits_are_the_models_own(llama, gpt2, tied):
    """``sequence_outputs`` applies the LM head to the response positions only; its logits equal
    transformers' full-sequence logits there (LLaMA's ``lm_head``, GPT-2's tied or own head)."""
    import transformers

    if not tied:
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=1, n_head=4, tie_word_embeddings=False
        )
        gpt2 = Policy(*causal_lm.init_causal_lm(config, jax.random.key(2), method="fast"))
        assert "lm_head" in gpt2.params
    ids, mask = prompts()
    tokens = jnp.arange(3 * NEW, dtype=jnp.int32).reshape(3, NEW) % VOCAB
    response_mask = jnp.ones_like(tokens)
    for policy in (llama, gpt2) if tied else (gpt2,):
        logits, _ = policy.outputs(policy.params, ids, mask, tokens, response_mask)
        full_mask = jnp.concatenate([mask, response_mask[:, :-1]], axis=1)
        full = policy.model(
            jnp.concatenate([ids, tokens[:, :-1]], axis=1),
            attention_mask=full_mask,
            position_ids=jnp.maximum(jnp.cumsum(full_mask, axis=1) - 1, 0),
            params=policy.params,
        ).logits
        np.testing.assert_allclose(logits, full[:, PROMPT - 1 :], atol=1e-5, rtol=1e-5)


def test_lora_zero_is_reference_and_trained_lora_runs(llama, key):
    ids, mask = prompts()
    config = lora.LoraConfig(rank=4, alpha=8.0)
    factors = lora.init_lora(llama.params, config, key)
    apply_lora = jax.jit(lora.apply_lora, static_argnums=2)  # one compile instead of one per kernel shape
    assert 0 < lora.trainable_fraction(factors, llama.params) < 0.2
    out = llama.sample(llama.params, ids, mask, key, NO_EOS)
    reference_logits, _ = llama.outputs(llama.params, ids, mask, out.tokens, out.mask)
    merged = apply_lora(llama.params, factors, config)
    logits, _ = llama.outputs(merged, ids, mask, out.tokens, out.mask)
    log_p, log_ref = jax.nn.log_softmax(logits), jax.nn.log_softmax(reference_logits)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_ref), axis=-1)
    assert float(jnp.abs(kl).max()) == 0.0

    leaves, treedef = jax.tree.flatten(factors)
    trained = jax.tree.unflatten(
        treedef,
        [
            0.3 * np.random.default_rng(i).normal(size=x.shape).astype(np.float32)
            for i, x in enumerate(leaves)
        ],
    )
    merged = apply_lora(llama.params, trained, config)
    logits, _ = llama.outputs(merged, ids, mask, out.tokens, out.mask)
    assert float(jnp.abs(logits - reference_logits).max()) > 1e-3
    sampled = llama.sample(merged, ids, mask, key, NO_EOS)
    recomputed = causal_lm.response_log_probs(
        llama.outputs(merged, ids, mask, sampled.tokens, sampled.mask)[0], sampled.tokens, sampled.mask
    )
    np.testing.assert_allclose(recomputed, sampled.log_probs, atol=1e-4)


def test_gpt2_fused_c_attn_lora(gpt2, key):
    ids, mask = prompts()
    config = lora.LoraConfig(rank=2, alpha=2.0, target_modules=("c_attn",))
    factors = lora.init_lora(gpt2.params, config, key)
    a = factors["transformer"]["h"]["0"]["attn"]["c_attn"]["lora_a"]
    assert a.shape == (32, 2)  # input side of the (3·32, 32) Conv1D kernel
    trained = jax.tree.map(lambda x: x + 0.3, factors)
    merged = lora.apply_lora(gpt2.params, trained, config)
    out = gpt2.greedy(merged, ids, mask, NO_EOS)
    assert out.tokens.shape == (3, NEW)
    base_logits, _ = gpt2.outputs(gpt2.params, ids, mask, out.tokens, out.mask)
    logits, _ = gpt2.outputs(merged, ids, mask, out.tokens, out.mask)
    assert float(jnp.abs(logits - base_logits).max()) > 1e-3


def test_mixture_of_one_hot_weights_is_that_model_and_mixes_two(llama, key):
    """``generate_mixture`` at w = e₁ samples what ``generate`` samples with the second params; at
    w = (0.5, 0.5) its greedy first token is the argmax of the hand-mixed log-softmaxes."""
    ids, mask = prompts()
    other = jax.tree.map(lambda leaf: leaf * 1.5, llama.params)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), llama.params, other)
    mixture = jax.jit(
        lambda stacked, weights, key, greedy: causal_lm.generate_mixture(
            llama.model, stacked, weights, ids, mask, key, max_new_tokens=NEW, eos_id=NO_EOS, greedy=greedy
        ),
        static_argnums=3,
    )
    alone = llama.sample(other, ids, mask, key, NO_EOS)
    mixed = mixture(stacked, jnp.array([0.0, 1.0]), key, False)
    np.testing.assert_array_equal(mixed.tokens, alone.tokens)
    np.testing.assert_allclose(mixed.log_probs, alone.log_probs, atol=1e-5)
    half = mixture(stacked, jnp.array([0.5, 0.5]), key, True)
    first = [
        jax.nn.log_softmax(
            causal_lm.sequence_outputs(
                llama.model, params, ids, mask, half.tokens[:, :1], jnp.ones_like(half.tokens[:, :1])
            )[0][:, 0]
        )
        for params in (llama.params, other)
    ]
    np.testing.assert_array_equal(half.tokens[:, 0], jnp.argmax(0.5 * first[0] + 0.5 * first[1], axis=-1))


def test_value_head_per_token(llama, key):
    ids, mask = prompts()
    out = llama.greedy(llama.params, ids, mask, NO_EOS)
    _, hidden = llama.outputs(llama.params, ids, mask, out.tokens, out.mask)
    head = causal_lm.ValueHead()
    head_params = head.init(key, hidden)["params"]
    values = head.apply({"params": head_params}, hidden)
    assert values.shape == (3, NEW) and values.dtype == jnp.float32


def test_user_errors(llama, key):
    ids, mask = prompts()
    with pytest.raises(ValueError, match="left-padded"):
        holes = jnp.array([[1, 1, 0, 1, 1, 1]] * 3)
        causal_lm.generate(llama.model, llama.params, ids, holes, key, max_new_tokens=2, eos_id=2)
    with pytest.raises(ValueError, match="pad left"):
        causal_lm.generate(llama.model, llama.params, ids, mask[:, ::-1], key, max_new_tokens=2, eos_id=2)
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        causal_lm.generate(llama.model, llama.params, ids, mask, key, max_new_tokens=60, eos_id=2)
    with pytest.raises(ValueError, match="not a Flax causal LM"):
        causal_lm.generate(object(), llama.params, ids, mask, key, max_new_tokens=2, eos_id=2)
    with pytest.raises(ValueError, match=r"\(B, R\)"):
        causal_lm.sequence_outputs(
            llama.model, llama.params, ids, mask, jnp.zeros((3, 2), jnp.int32), jnp.ones((3, 3))
        )


def test_load_causal_lm_round_trip(llama, tmp_path):
    from rs_jax.models import hf

    hf.save_flax_pretrained(llama.model, llama.params, tmp_path)
    model, params = causal_lm.load_causal_lm(tmp_path)
    assert type(model) is type(llama.model)
    jax.tree.map(np.testing.assert_array_equal, params, llama.params)
    with pytest.raises(ValueError, match="not a Hugging Face model directory"):
        causal_lm.load_causal_lm(tmp_path / "missing")
