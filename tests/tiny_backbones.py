"""One tiny model of each unified backbone, shared by the tests of ``rs_jax.models.backbones``."""

import functools

import jax
import jax.numpy as jnp

from rs_jax.models import backbones, captioner

WORDS, BINS, PROMPT, OUTPUT, IMAGE = 20, 10, 5, 4, 16
PROMPTS = jnp.array([[5, 6, 2, 0, 0], [7, 2, 0, 0, 0], [8, 9, 10, 11, 2]] * 2)  # (6, PROMPT)


@functools.cache
def model_and_params(name: str):
    """(backbone, model, params) of a 1-layer, width-16 model with ``BINS`` location tokens after
    ``WORDS`` words (call it under the ``fast_compile`` fixture)."""
    backbone = backbones.BACKBONES[name]
    with jax.numpy_rank_promotion("allow"):  # module-scoped callers run before the third_party fixture
        size = captioner.ModelSize(image_size=IMAGE, hidden_size=16, num_layers=1, num_heads=2)
        model = backbone.tiny(
            WORDS + BINS, size, prompt_length=PROMPT, output_length=OUTPUT, special_ids=(1, 2, 0)
        )
        params = backbone.init_params(model, jax.random.PRNGKey(0), first_location_id=WORDS, num_bins=BINS)
    return backbone, model, params
