"""The ViT + GPT-2 captioner: cached sampling agrees with teacher forcing, mixtures, loading."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rs_jax.models import captioner, hf
from rs_jax.train import supervised, trainer

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]
VOCAB, LENGTH, IMAGE = 20, 8, 16


@pytest.fixture(scope="module")
def model_and_params(third_party_module):
    model = captioner.tiny_captioner(
        VOCAB, image_size=IMAGE, hidden_size=32, num_layers=1, num_heads=2, max_length=LENGTH
    )
    return model, captioner.init_params(model, jax.random.PRNGKey(0))


def images(batch: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.PRNGKey(seed), (batch, IMAGE, IMAGE, 3))


def test_sampled_log_probs_equal_teacher_forcing(model_and_params):
    model, params = model_and_params
    pictures = images(6)
    sample = jax.jit(
        lambda params, key: captioner.sample_captions(model, params, pictures, key, max_length=LENGTH)
    )(params, jax.random.PRNGKey(1))
    forced = captioner.token_log_probs(model, params, pictures, sample.tokens)
    np.testing.assert_allclose(forced, sample.log_probs, atol=1e-4)
    assert sample.tokens.shape == (6, LENGTH)


@pytest.mark.parametrize("rule", ["logits", "probs"])
def test_mixture_of_one_hot_weights_is_that_model(model_and_params, rule):
    """MOD (rule "logits") and prediction ensembling (rule "probs") at w = (0, 1): the second model."""
    model, params = model_and_params
    other = captioner.init_params(model, jax.random.PRNGKey(5))
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, other)
    pictures = images(4, seed=2)
    key = jax.random.PRNGKey(3)
    alone = captioner.sample_captions(model, other, pictures, key, max_length=LENGTH)
    mixed = captioner.sample_captions_mixture(
        model, stacked, jnp.array([0.0, 1.0]), pictures, key, rule=rule, max_length=LENGTH
    )
    np.testing.assert_array_equal(mixed.tokens, alone.tokens)
    np.testing.assert_allclose(mixed.log_probs, alone.log_probs, atol=1e-5)


def test_supervised_pretraining_lowers_the_loss(model_and_params):
    model, params = model_and_params
    pictures = images(8, seed=4)
    captions = jnp.tile(jnp.array([[5, 6, 7, 2, 0, 0, 0, 0]], jnp.int32), (8, 1))
    learner = supervised.SupervisedLearner(
        lambda key: {"images": pictures, "captions": captions},
        lambda params, batch, key: captioner.caption_loss(model, params, batch["images"], batch["captions"]),
    )
    optimizer = optax.adam(3e-3)
    update = trainer.make_update(learner, optimizer, num_epochs=1, num_minibatches=1)
    state = trainer.init_state(params, optimizer, None, seed=0)
    _, history = trainer.fit(update, state, jnp.zeros(1), 30)
    assert history[-1]["cross_entropy"] < 0.5 * history[0]["cross_entropy"]


def test_load_from_a_local_hf_directory(model_and_params, tmp_path):
    model, params = model_and_params
    hf.save_flax_pretrained(model, params, tmp_path / "captioner")
    loaded, loaded_params = captioner.load_captioner(tmp_path / "captioner")
    pictures = images(2)
    tokens = jnp.array([[4, 5, 2, 0, 0, 0, 0, 0]] * 2, jnp.int32)
    np.testing.assert_allclose(
        captioner.token_log_probs(loaded, loaded_params, pictures, tokens),
        captioner.token_log_probs(model, params, pictures, tokens),
        atol=1e-6,
    )


def test_bad_images_are_a_value_error(model_and_params):
    model, params = model_and_params
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        channels_first = jnp.zeros((2, 3, IMAGE, IMAGE))
        captioner.token_log_probs(model, params, channels_first, jnp.zeros((2, 4), jnp.int32))
