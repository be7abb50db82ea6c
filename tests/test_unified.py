"""The ViT + GPT-2 unified model's prompt layout (its sampling, masks and initialization are tested
with the other backbone's in tests/test_backbones.py)."""

import jax.numpy as jnp

from rs_jax.models import unified


def test_prompt_context_is_right_aligned_with_bos():
    prompts = jnp.array([[5, 6, 2, 0, 0], [7, 8, 9, 10, 2]])
    context, present = unified.prompt_context(prompts, bos_id=1, pad_id=0)
    assert context.tolist() == [[0, 0, 1, 5, 6, 2], [1, 7, 8, 9, 10, 2]]
    assert present.tolist() == [[False, False, True, True, True, True], [True] * 6]
