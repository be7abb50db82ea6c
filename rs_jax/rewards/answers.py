"""VQA answer rewards on token ids: exact match, VQA accuracy, BLEU-1 and METEOR, jit-able.

Conventions as ``rs_jax.rewards.text_metrics``: candidates (B, Lc) and references (B, K, Lr)
are left-aligned token ids; everything from the first ``pad_id`` on is ignored; an all-pad
reference is missing. ``references[:, 0]`` is the canonical answer (the scene world's short
answer, VQAv2's most common answer; see ``rs_jax.data.vqa``).

* ``accuracy``: 1 if the candidate equals the canonical answer word for word, else 0.
* ``vqa_accuracy``: min(#references equal to the candidate / 3, 1), VQAv2's accuracy over
  its 10 human answers (without the average over the 10 leave-one-out subsets).
* ``bleu1`` / ``meteor``: similarity to the closest references (``text_metrics``); they also
  reward partially right and longer, differently worded answers.

>>> import jax.numpy as jnp
>>> refs = jnp.array([[[5, 0, 0], [7, 8, 5]]])
>>> exact_match(jnp.array([[7, 8, 5, 0]]), refs)
Array([[False,  True]], dtype=bool)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from rs_jax.rewards import text_metrics

ANSWER_REWARD_NAMES = ("accuracy", "vqa_accuracy", "bleu1", "meteor")


def _canonical(tokens: jax.Array, pad_id: int, length: int) -> jax.Array:
    """(..., L) -> (..., length): pad from the first pad on, padded or cut to ``length``."""
    valid = jnp.cumsum(tokens == pad_id, axis=-1) == 0
    tokens = jnp.where(valid, tokens, pad_id)
    if tokens.shape[-1] >= length:
        return tokens[..., :length]
    padding = [(0, 0)] * (tokens.ndim - 1) + [(0, length - tokens.shape[-1])]
    return jnp.pad(tokens, padding, constant_values=pad_id)


def exact_match(candidates: jax.Array, references: jax.Array, *, pad_id: int = 0) -> jax.Array:
    """(B, Lc), (B, K, Lr) -> (B, K) bool: the candidate equals reference k word for word.

    Missing (all-pad) references never match, not even an empty candidate.
    """
    if jnp.ndim(candidates) != 2 or jnp.ndim(references) != 3:
        raise ValueError(
            f"candidates must be (B, L) and references (B, K, L); got {jnp.shape(candidates)} and "
            f"{jnp.shape(references)}."
        )
    length = max(candidates.shape[-1], references.shape[-1])
    cand = _canonical(candidates, pad_id, length)
    refs = _canonical(references, pad_id, length)
    same = jnp.all(cand[:, None, :] == refs, axis=-1)
    return same & (refs[..., 0] != pad_id)


def answer_rewards(
    names: Sequence[str], *, pad_id: int = 0, eos_id: int | None = None
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A jit-able ``(candidates, references) -> (B, len(names))`` reward-components function.

    Args:
      names: components from ``ANSWER_REWARD_NAMES``, in order.
      pad_id: padding id.
      eos_id: if given, ``<eos>`` is turned into padding first (answers are scored on their words).

    Raises:
      ValueError: on no names or an unknown name (listing the valid ones).
    """
    names = tuple(names)
    unknown = [name for name in names if name not in ANSWER_REWARD_NAMES]
    if not names or unknown:
        raise ValueError(f"Answer rewards must be named from {ANSWER_REWARD_NAMES}; got {list(names)}.")

    def reward_components(candidates: jax.Array, references: jax.Array) -> jax.Array:
        if eos_id is not None:
            candidates = jnp.where(candidates == eos_id, pad_id, candidates)
            references = jnp.where(references == eos_id, pad_id, references)
        scores = {}
        if "accuracy" in names or "vqa_accuracy" in names:
            matches = exact_match(candidates, references, pad_id=pad_id)
            scores["accuracy"] = matches[:, 0].astype(jnp.float32)
            scores["vqa_accuracy"] = jnp.minimum(matches.sum(axis=1) / 3.0, 1.0).astype(jnp.float32)
        if "bleu1" in names:
            scores["bleu1"] = text_metrics.bleu(candidates, references, max_order=1, pad_id=pad_id)[:, 0]
        if "meteor" in names:
            scores["meteor"] = text_metrics.meteor(candidates, references, pad_id=pad_id)
        return jnp.stack([scores[name] for name in names], axis=-1)

    return reward_components
