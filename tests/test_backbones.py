"""Both unified backbones through the one ``Backbone`` interface: cached sampling agrees with teacher
forcing, allowed-token masks, coordinate-aware initialization."""

import jax
import numpy as np
import pytest
from tiny_backbones import BINS, IMAGE, OUTPUT, PROMPT, PROMPTS, WORDS, model_and_params

from rs_jax.models import backbones

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]
# where each backbone keeps its location-token embeddings and its ViT's position embeddings
TABLES = {
    "vit-gpt2": (
        ("decoder", "transformer", "wte", "embedding"),
        ("encoder", "embeddings", "position_embeddings"),
    ),
    "bart": (("bart", "model", "shared", "embedding"), ("vision", "embeddings", "position_embeddings")),
}


@pytest.fixture(scope="module", params=sorted(backbones.BACKBONES))
def tiny(request, fast_compile):
    return model_and_params(request.param)


def test_sampled_log_probs_equal_teacher_forcing_and_respect_the_mask(tiny):
    backbone, model, params = tiny
    images = jax.random.uniform(jax.random.PRNGKey(1), (6, IMAGE, IMAGE, 3))
    words = backbone.word_mask(model, WORDS)
    sample = jax.jit(
        lambda params, key: backbone.sample_outputs(
            model, params, images, PROMPTS, key, max_length=OUTPUT, allowed=words
        )
    )(params, jax.random.PRNGKey(2))
    forced = jax.jit(
        lambda params, tokens: backbone.token_log_probs(model, params, images, PROMPTS, tokens, words)
    )(params, sample.tokens)
    np.testing.assert_allclose(forced, sample.log_probs, atol=1e-4)
    emitted = np.asarray(sample.tokens)[np.asarray(sample.mask)]
    assert words[emitted].all() and sample.tokens.shape == (6, OUTPUT)
    assert not words[[0, 1]].any() and words[2] and not words[WORDS:].any()  # no <pad>/<bos>/<loc>
    with pytest.raises(ValueError, match="positions"):
        backbone.sample_outputs(
            model, params, images, PROMPTS, jax.random.PRNGKey(2), max_length=PROMPT + OUTPUT + 1
        )


def test_batch_helpers_read_the_images_and_prompts_of_a_batch(tiny):
    backbone, model, params = tiny
    batch = {"images": jax.random.uniform(jax.random.PRNGKey(1), (6, IMAGE, IMAGE, 3)), "prompts": PROMPTS}
    words, key = backbone.word_mask(model, WORDS), jax.random.PRNGKey(2)
    tokens = backbone.sample_batch(model, params, batch, key, max_length=OUTPUT, allowed=words)
    sample = backbone.sample_outputs(
        model, params, batch["images"], PROMPTS, key, max_length=OUTPUT, allowed=words
    )
    np.testing.assert_array_equal(tokens, sample.tokens)
    log_prob = backbone.batch_log_prob(model, params, batch, tokens, words)
    np.testing.assert_allclose(log_prob, sample.log_probs.sum(axis=-1), atol=1e-4)


def test_mixture_of_one_hot_weights_is_that_model(tiny):
    backbone, model, params = tiny
    images = jax.random.uniform(jax.random.PRNGKey(1), (3, IMAGE, IMAGE, 3))
    words = backbone.word_mask(model, WORDS)
    other = jax.tree.map(lambda leaf: leaf * 1.2, params)
    stacked = jax.tree.map(lambda a, b: np.stack([a, b]), params, other)
    key = jax.random.PRNGKey(2)
    alone = backbone.sample_outputs(model, other, images, PROMPTS[:3], key, max_length=OUTPUT, allowed=words)
    mixed = jax.jit(
        lambda stacked, weights: backbone.sample_outputs_mixture(
            model, stacked, weights, images, PROMPTS[:3], key, max_length=OUTPUT, allowed=words
        )
    )(stacked, np.array([0.0, 1.0], np.float32))
    np.testing.assert_array_equal(mixed.tokens, alone.tokens)
    emitted = np.asarray(mixed.tokens)[np.asarray(mixed.mask)]
    assert words[emitted].all()


def test_location_embeddings_start_ordered(tiny):
    backbone, _, params = tiny
    table_path, positions_path = TABLES[backbone.name]
    table = np.asarray(_at(params, table_path)[WORDS:])
    similarity = table @ table[3]
    assert similarity.argmax() == 3 and similarity[2] > similarity[0] and similarity[4] > similarity[9]
    assert _at(params, positions_path).shape == (1, (IMAGE // 8) ** 2 + 1, 16)
    assert table.shape == (BINS, 16)


def test_select_checks_the_name_and_directories():
    assert backbones.select("bart") is backbones.BART and backbones.select("vit-gpt2") is backbones.VIT_GPT2
    with pytest.raises(ValueError, match="backbone must be one of"):
        backbones.select("ofa")
    with pytest.raises(ValueError, match="vision_model= is the ViT"):
        backbones.select("vit-gpt2", "/model", "/vit")


def _at(tree, path):
    for name in path:
        tree = tree[name]
    return tree
