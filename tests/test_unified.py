"""The unified image+prompt model: prompt layout, cached sampling agrees with teacher forcing,
allowed-token masks, coordinate-aware initialization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.models import unified

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]
WORDS, BINS, PROMPT, OUTPUT, IMAGE = 20, 10, 5, 4, 16


@pytest.fixture(scope="module")
def model_and_params(fast_compile):
    with jax.numpy_rank_promotion("allow"):  # module-scoped: runs before the third_party fixture
        model = unified.tiny_unified_model(
            WORDS + BINS,
            prompt_length=PROMPT,
            output_length=OUTPUT,
            image_size=IMAGE,
            hidden_size=16,
            num_layers=1,
            num_heads=2,
        )
        params = unified.init_params(model, jax.random.PRNGKey(0), first_location_id=WORDS, num_bins=BINS)
        return model, params


def test_prompt_context_is_right_aligned_with_bos():
    prompts = jnp.array([[5, 6, 2, 0, 0], [7, 8, 9, 10, 2]])
    context, present = unified.prompt_context(prompts, bos_id=1, pad_id=0)
    assert context.tolist() == [[0, 0, 1, 5, 6, 2], [1, 7, 8, 9, 10, 2]]
    assert present.tolist() == [[False, False, True, True, True, True], [True] * 6]


def test_sampled_log_probs_equal_teacher_forcing_and_respect_the_mask(model_and_params):
    model, params = model_and_params
    images = jax.random.uniform(jax.random.PRNGKey(1), (6, IMAGE, IMAGE, 3))
    prompts = jnp.array([[5, 6, 2, 0, 0], [7, 2, 0, 0, 0], [8, 9, 10, 11, 2]] * 2)
    words = unified.word_mask(model, WORDS)
    sample = jax.jit(
        lambda params, key: unified.sample_outputs(
            model, params, images, prompts, key, max_length=OUTPUT, allowed=words
        )
    )(params, jax.random.PRNGKey(2))
    forced = unified.token_log_probs(model, params, images, prompts, sample.tokens, words)
    np.testing.assert_allclose(forced, sample.log_probs, atol=1e-4)
    emitted = np.asarray(sample.tokens)[np.asarray(sample.mask)]
    assert words[emitted].all() and sample.tokens.shape == (6, OUTPUT)
    with pytest.raises(ValueError, match="positions"):
        unified.sample_outputs(model, params, images, prompts, jax.random.PRNGKey(2), max_length=OUTPUT + 1)


def test_location_embeddings_start_ordered(model_and_params):
    _, params = model_and_params
    table = np.asarray(params["decoder"]["transformer"]["wte"]["embedding"][WORDS:])
    similarity = table @ table[3]
    assert similarity.argmax() == 3 and similarity[2] > similarity[0] and similarity[4] > similarity[9]
    positions = params["encoder"]["embeddings"]["position_embeddings"]
    assert positions.shape == (1, (IMAGE // 8) ** 2 + 1, 16)
