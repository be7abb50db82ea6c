"""VQA answer rewards: exact match, VQA accuracy and the text-metric components."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.rewards import answers

EOS = 2
# Three references per question: the canonical short answer first, then longer wordings.
REFERENCES = jnp.array(
    [
        [[5, EOS, 0, 0], [9, 8, 5, EOS], [0, 0, 0, 0]],  # "red" / "it is red" / missing
        [[6, EOS, 0, 0], [6, EOS, 0, 0], [6, EOS, 0, 0]],  # "blue" three times
    ]
)


def test_exact_match_ignores_padding_and_missing_references():
    candidates = jnp.array([[9, 8, 5, 0, 0, 0], [6, 0, 0, 0, 0, 0]])
    stripped = jnp.where(REFERENCES == EOS, 0, REFERENCES)
    assert answers.exact_match(candidates, stripped).tolist() == [[False, True, False], [True, True, True]]
    empty = jnp.zeros((2, 3), jnp.int32)
    assert not answers.exact_match(empty, stripped).any()  # an empty answer never matches
    with pytest.raises(ValueError, match=r"\(B, K, L\)"):
        answers.exact_match(candidates, stripped[:, 0])


def test_answer_rewards_by_hand():
    score = jax.jit(answers.answer_rewards(["accuracy", "vqa_accuracy", "bleu1", "meteor"], eos_id=EOS))
    candidates = jnp.array([[5, EOS, 0, 0, 0], [9, 8, 5, EOS, 0]])
    rewards = np.asarray(score(candidates, REFERENCES[:1].repeat(2, axis=0)))
    np.testing.assert_allclose(rewards[:, :3], [[1.0, 1 / 3, 1.0], [0.0, 1 / 3, 1.0]], rtol=1e-6)
    # METEOR of a one-word match: F = 1, one chunk per match: 1 - 0.5 (1/1)^3 = 0.5; three words: 1 - 0.5/27.
    np.testing.assert_allclose(rewards[:, 3], [0.5, 1.0 - 0.5 / 27.0], rtol=1e-5)
    all_agree = answers.answer_rewards(["vqa_accuracy", "accuracy"], eos_id=EOS)(
        jnp.array([[6, EOS]]), REFERENCES[1:]
    )
    np.testing.assert_allclose(all_agree, [[1.0, 1.0]])


def test_unknown_reward_is_a_value_error():
    with pytest.raises(ValueError, match="sharpness"):
        answers.answer_rewards(["accuracy", "sharpness"])
