"""rs_jax.models.sampling on toy step functions (no model code: strict rank promotion)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.models import sampling

VOCAB = 6
EOS = 5
PAD = 0


def counter_step(cache, tokens, step):
    """Deterministic toy model: strongly prefers token (previous + 1) mod VOCAB; counts calls."""
    logits = 8.0 * jax.nn.one_hot((tokens + 1) % VOCAB, VOCAB) + 0.1 * step.astype(jnp.float32)
    return logits, cache + 1


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def fixed_step(logits, cache, tokens, step):
    return jnp.broadcast_to(logits, (tokens.shape[0], logits.shape[-1])), cache


def sample_fixed(logits, key, max_length, **options):
    """4000 rows sampled from the same ``logits`` at every step, without EOS."""
    step_fn = functools.partial(fixed_step, logits)
    first = jnp.zeros((4000,), jnp.int32)
    return sampling.sample(step_fn, (), first, key, max_length=max_length, eos_id=None, **options)


@functools.partial(jax.jit, static_argnames=("max_length", "greedy", "eos_id"))
def run_counter(first, key, max_length, greedy=True, eos_id=EOS):
    return sampling.sample(
        counter_step,
        jnp.zeros((), jnp.int32),
        first,
        key,
        max_length=max_length,
        eos_id=eos_id,
        pad_id=PAD,
        greedy=greedy,
    )


def test_shapes_and_max_length(key):
    out = run_counter(jnp.array([1, 2, 3], jnp.int32), key, max_length=7)
    assert out.tokens.shape == out.log_probs.shape == out.mask.shape == (3, 7)
    assert out.tokens.dtype == jnp.int32 and out.log_probs.dtype == jnp.float32 and out.mask.dtype == bool


def test_eos_stops_row_and_pads_after(key):
    out = jax.device_get(run_counter(jnp.array([1, 3, 4, 0], jnp.int32), key, max_length=6))
    # Row starting at s emits s+1, s+2, ...; EOS (5) comes after 5-s-1 tokens.
    expected = [[2, 3, 4, 5, 0, 0], [4, 5, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0]]
    np.testing.assert_array_equal(out.tokens, expected)
    np.testing.assert_array_equal(out.mask, np.asarray(expected) != 0)
    assert np.all(out.log_probs[~out.mask] == 0.0)
    assert np.all(out.log_probs[out.mask] < 0.0)


def test_row_without_eos_fills_max_length(key):
    out = run_counter(jnp.array([1], jnp.int32), key, max_length=4, eos_id=None)
    np.testing.assert_array_equal(out.tokens, [[2, 3, 4, 5]])
    assert bool(out.mask.all())


def test_greedy_is_argmax_and_log_probs_are_raw_softmax(key):
    table = jax.random.normal(jax.random.key(1), (VOCAB, VOCAB))

    def step_fn(cache, tokens, step):
        return table[tokens] * (1.0 + step.astype(jnp.float32)), cache

    first = jnp.arange(VOCAB, dtype=jnp.int32)
    out = sampling.sample(step_fn, (), first, key, max_length=5, eos_id=None, greedy=True, temperature=0.3)
    table = np.asarray(table)
    previous = np.arange(VOCAB)
    for step in range(5):
        logits = table[previous] * (1 + step)
        expected = logits.argmax(-1)
        np.testing.assert_array_equal(out.tokens[:, step], expected)
        log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        np.testing.assert_allclose(out.log_probs[:, step], log_softmax[np.arange(VOCAB), expected], atol=1e-5)
        previous = expected


def test_same_key_same_tokens_other_key_differs():
    logits = jnp.zeros((50,))
    step_fn = functools.partial(fixed_step, logits)
    run = jax.jit(
        lambda k: sampling.sample(step_fn, (), jnp.zeros((8,), jnp.int32), k, max_length=10, eos_id=None)
    )
    a, b, c = run(jax.random.key(3)), run(jax.random.key(3)), run(jax.random.key(4))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_step_fn_gets_step_index_and_threaded_cache(key):
    def step_fn(cache, tokens, step):
        # Greedy picks the token equal to cache + step: cache counts calls, so token = 2 * step.
        return jnp.broadcast_to(10.0 * jax.nn.one_hot(cache + step, 20), (tokens.shape[0], 20)), cache + 1

    out = sampling.sample(
        step_fn,
        jnp.zeros((), jnp.int32),
        jnp.zeros((2,), jnp.int32),
        key,
        max_length=5,
        eos_id=None,
        greedy=True,
    )
    np.testing.assert_array_equal(out.tokens, [[0, 2, 4, 6, 8]] * 2)


def test_empirical_frequencies_match_softmax(key):
    logits = jnp.array([1.0, 0.0, -1.0, 2.0, 0.5])
    out = sample_fixed(logits, key, max_length=5)
    counts = np.bincount(np.asarray(out.tokens).ravel(), minlength=5) / out.tokens.size
    np.testing.assert_allclose(counts, np.exp(np_log_softmax(logits)), atol=0.015)
    np.testing.assert_allclose(out.log_probs, np_log_softmax(logits)[np.asarray(out.tokens)], atol=1e-6)


def test_temperature_sharpens(key):
    logits = jnp.array([1.0, 0.0, -1.0])
    out = sample_fixed(logits, key, max_length=2, temperature=0.5)
    counts = np.bincount(np.asarray(out.tokens).ravel(), minlength=3) / out.tokens.size
    np.testing.assert_allclose(counts, np.exp(np_log_softmax(2 * np.asarray(logits))), atol=0.015)
    # log_probs stay those of the raw (temperature 1) distribution.
    np.testing.assert_allclose(out.log_probs, np_log_softmax(logits)[np.asarray(out.tokens)], atol=1e-6)


def test_filter_logits_top_k_and_top_p():
    probs = jnp.array([[0.05, 0.5, 0.15, 0.3]])
    logits = jnp.log(probs)
    kept = lambda x: np.isfinite(np.asarray(x))[0].tolist()  # noqa: E731
    assert kept(sampling.filter_logits(logits, top_k=2)) == [False, True, False, True]
    assert kept(sampling.filter_logits(logits, top_k=0)) == [True] * 4
    assert kept(sampling.filter_logits(logits, top_p=0.7)) == [False, True, False, True]
    assert kept(sampling.filter_logits(logits, top_p=0.9)) == [False, True, True, True]
    assert kept(sampling.filter_logits(logits, top_p=0.1)) == [False, True, False, False]
    assert kept(sampling.filter_logits(logits, top_k=3, top_p=0.9)) == [False, True, True, True]
    np.testing.assert_array_equal(sampling.filter_logits(logits, top_k=4, top_p=1.0), logits)


def test_sampling_respects_filters(key):
    logits = jnp.log(jnp.array([0.05, 0.5, 0.15, 0.3]))
    step_fn = functools.partial(fixed_step, logits)
    first = jnp.zeros((2000,), jnp.int32)
    top_k = sampling.sample(step_fn, (), first, key, max_length=2, eos_id=None, top_k=2)
    assert set(np.unique(top_k.tokens).tolist()) == {1, 3}
    frequency_of_1 = float((np.asarray(top_k.tokens) == 1).mean())
    assert abs(frequency_of_1 - 0.5 / 0.8) < 0.03
    top_p = sampling.sample(step_fn, (), first, key, max_length=2, eos_id=None, top_p=0.9)
    assert set(np.unique(top_p.tokens).tolist()) == {1, 2, 3}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_length": 0}, "max_length"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_invalid_settings_raise(key, kwargs, match):
    settings = {"max_length": 3, "eos_id": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        sampling.sample(counter_step, jnp.zeros((), jnp.int32), jnp.zeros((2,), jnp.int32), key, **settings)


def test_bad_first_tokens_and_logits_raise(key):
    with pytest.raises(ValueError, match="first_tokens"):
        sampling.sample(counter_step, 0, jnp.zeros((2, 1), jnp.int32), key, max_length=2, eos_id=None)
    bad_step = lambda cache, tokens, step: (jnp.zeros((3, 4)), cache)  # noqa: E731
    with pytest.raises(ValueError, match="logits of shape"):
        sampling.sample(bad_step, (), jnp.zeros((2,), jnp.int32), key, max_length=2, eos_id=None)


# --------------------------------------------------------------------------- decoding-time mixing


def table_step(table, cache, tokens, step):
    """A toy model: the logits of the next token are row ``tokens`` of its (V, V) ``table``."""
    return table[tokens] + 0.0 * step.astype(jnp.float32), cache + 1


def table_start(first, table):
    """``start`` of ``sample_mixture``: a step Partial over the member's table, a call counter."""
    return jax.tree_util.Partial(table_step, table), jnp.zeros((), jnp.int32), first


def tables(n: int = 2) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(7), (n, VOCAB, VOCAB)) * 2.0


@functools.partial(jax.jit, static_argnames=("rule", "greedy"))
def run_mixture(stacked, weights, first, key, rule="logits", greedy=False):
    return sampling.sample_mixture(
        functools.partial(table_start, first),
        stacked,
        weights,
        key,
        rule=rule,
        max_length=7,
        eos_id=EOS,
        pad_id=PAD,
        greedy=greedy,
    )


@pytest.mark.parametrize("rule", ["logits", "probs"])
@pytest.mark.parametrize("greedy", [False, True])
def test_mixture_with_one_hot_weights_is_that_member(key, rule, greedy):
    stacked, first = tables(3), jnp.arange(8, dtype=jnp.int32) % VOCAB
    for member in range(3):
        alone = sampling.sample(
            functools.partial(table_step, stacked[member]),
            jnp.zeros((), jnp.int32),
            first,
            key,
            max_length=7,
            eos_id=EOS,
            pad_id=PAD,
            greedy=greedy,
        )
        mixed = run_mixture(stacked, jax.nn.one_hot(member, 3), first, key, rule=rule, greedy=greedy)
        np.testing.assert_array_equal(mixed.tokens, alone.tokens)
        np.testing.assert_array_equal(mixed.mask, alone.mask)
        np.testing.assert_allclose(mixed.log_probs, alone.log_probs, atol=1e-5)


def test_mixed_logits_are_the_weighted_sum_of_log_softmaxes():
    logits = jax.random.normal(jax.random.PRNGKey(1), (2, 3, VOCAB)) * 3.0
    logits = logits.at[0, :, 1].set(-jnp.inf)  # a token that member 0 forbids
    weights = jnp.array([0.3, 0.7])
    mixed = np.asarray(sampling.mix_log_probs(logits, weights, rule="logits"))
    expected = 0.3 * np_log_softmax(logits[0]) + 0.7 * np_log_softmax(logits[1])
    np.testing.assert_allclose(mixed, expected, rtol=1e-5)
    assert np.all(np.isneginf(mixed[:, 1]))
    ensembled = np.asarray(sampling.mix_log_probs(logits, weights, rule="probs"))
    probs = 0.3 * np.exp(np_log_softmax(logits[0])) + 0.7 * np.exp(np_log_softmax(logits[1]))
    np.testing.assert_allclose(np.exp(ensembled), probs, rtol=1e-5, atol=1e-7)
    # Zero weight: a member's -inf never becomes NaN.
    alone = sampling.mix_log_probs(logits, jnp.array([0.0, 1.0]), rule="logits")
    np.testing.assert_array_equal(alone, jax.nn.log_softmax(logits[1]))


def test_each_greedy_token_is_the_argmax_of_the_hand_mixed_step(key):
    """Two members, w = (0.3, 0.7): every greedy step takes argmax Σ wᵢ log_softmax(tableᵢ[prev])."""
    stacked, first = tables(2), jnp.arange(VOCAB, dtype=jnp.int32)
    weights = jnp.array([0.3, 0.7])
    out = jax.device_get(run_mixture(stacked, weights, first, key, greedy=True))
    previous = np.asarray(first)
    for t in range(out.tokens.shape[1]):
        hand = 0.3 * np_log_softmax(stacked[0][previous]) + 0.7 * np_log_softmax(stacked[1][previous])
        active = out.mask[:, t]
        np.testing.assert_array_equal(out.tokens[active, t], hand.argmax(-1)[active])
        np.testing.assert_allclose(
            out.log_probs[active, t], np_log_softmax(hand)[active, hand.argmax(-1)[active]], atol=1e-5
        )
        previous = out.tokens[:, t]


def test_one_compile_serves_every_weight(key):
    stacked, first = tables(2), jnp.zeros((4,), jnp.int32)
    run_mixture(stacked, jnp.array([1.0, 0.0]), first, key)
    compiled = run_mixture._cache_size()
    for weights in ([0.5, 0.5], [0.2, 0.8]):
        run_mixture(stacked, jnp.asarray(weights), first, key)
    assert run_mixture._cache_size() == compiled


def test_mixture_user_errors(key):
    stacked, first = tables(2), jnp.zeros((2,), jnp.int32)
    with pytest.raises(ValueError, match="rule"):
        sampling.sample_mixture(
            functools.partial(table_start, first),
            stacked,
            jnp.ones(2) / 2,
            key,
            rule="max",
            max_length=2,
            eos_id=None,
        )
    with pytest.raises(ValueError, match="weights"):
        sampling.sample_mixture(
            functools.partial(table_start, first), stacked, jnp.ones(3) / 3, key, max_length=2, eos_id=None
        )

    def closure_start(table):
        return (lambda cache, tokens, step: table_step(table, cache, tokens, step)), jnp.zeros(()), first

    with pytest.raises(ValueError, match="Partial"):
        sampling.sample_mixture(closure_start, stacked, jnp.ones(2) / 2, key, max_length=2, eos_id=None)
