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
