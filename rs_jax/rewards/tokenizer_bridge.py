"""A text bridge between any two HF tokenizers, callable inside ``jit`` and ``vmap``.

A real policy (LLaMA, GPT-2, OPT, …) speaks its own sub-word tokenizer and a reward model
(the MiniLM, a BERT/DeBERTa classifier) another. Sub-word pieces do not map one-to-one across
tokenizers (``rs_jax.rewards.reward_models.TokenBridge``'s per-word table only works for a
word-level policy vocabulary), so this bridge goes through the text:

1. decode the policy ids with the policy tokenizer (the tokens under ``mask``, special tokens
   skipped), as ``tokenizer.decode(ids, skip_special_tokens=True)``;
2. encode that text with the reward tokenizer (``truncation=True, max_length=T``, its special
   tokens added) and pad it on the right to T columns. A reward model with its own non-HF
   tokenization (e.g. ``rs_jax.rewards.toxicity.KerasWordTokenizer``) plugs in as a
   ``TextEncoder``: its ``encode_padded(texts, T)`` lays out the (N, T) ids its own way.

Both run on the host, in one ``jax.pure_callback`` per call with declared (…, T) int32
results, so a PPO update that scores its samples stays one compiled program. The callback is
registered with ``vmap_method="broadcast_all"``: under ``vmap`` (e.g. M runs vmapped over reward
weights) the host receives the whole (M, B, L) batch at once and tokenizes it in one pass.

The callback makes the program impure only in time spent, not in values: equal ids give equal
texts. ``tests/test_tokenizer_bridge.py`` checks the results equal host-side decode → encode.

>>> bridge = build_text_bridge(llama_tokenizer, minilm_tokenizer, max_length=64)  # doctest: +SKIP
>>> input_ids, attention_mask = jax.jit(bridge.inputs)(token_ids, mask)  # doctest: +SKIP
>>> input_ids.shape  # (B, 64)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax.data.prompts import pad_id_of, pad_rows


@runtime_checkable
class TextEncoder(Protocol):
    """A reward model's own text -> ids step, for models without an HF tokenizer."""

    def encode_padded(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) int32 ids and attention mask of N texts, T = ``max_length``."""
        ...

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many of the T columns its special tokens take."""
        ...


def load_tokenizer(directory: str | os.PathLike) -> Any:
    """The HF ``AutoTokenizer`` of a local directory (no hub access).

    Raises:
      ValueError: if the directory has no usable tokenizer files.
    """
    import transformers

    directory = os.fspath(directory)
    try:
        return transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{directory} has no usable tokenizer files ({error}).") from error


def is_hf_tokenizer(obj: Any) -> bool:
    """True for a transformers tokenizer (slow or fast)."""
    import transformers

    return isinstance(obj, transformers.PreTrainedTokenizerBase)


def special_ids(tokenizer: Any) -> np.ndarray:
    """(S,) int32 sorted ids of the tokenizer's special tokens (``<s>``, ``</s>``, ``<pad>``, …)."""
    return np.array(sorted(set(tokenizer.all_special_ids)), np.int32).reshape(-1)


def content_mask(special: np.ndarray, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """(B, L) -> bool (B, L): the tokens under ``mask`` (all if None) that are not in ``special``."""
    token_ids = jnp.asarray(token_ids)
    keep = ~jnp.isin(token_ids, jnp.asarray(special, token_ids.dtype))
    return keep if mask is None else keep & jnp.asarray(mask).astype(bool)


def decode_texts(tokenizer: Any, token_ids: np.ndarray, mask: np.ndarray | None = None) -> list[str]:
    """Host-side texts of (N, L) policy ids: the ids under ``mask``, special tokens skipped.

    Ids outside the tokenizer's vocabulary (models whose embedding table is padded past it)
    decode to nothing.
    """
    token_ids = np.asarray(token_ids)
    mask = np.ones(token_ids.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    rows = [row[keep].tolist() for row, keep in zip(token_ids, mask)]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def encode_padded(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Host-side (N, T) int32 ids and attention mask of texts, padded right to T = ``max_length``.

    The same as ``tokenizer(texts, truncation=True, max_length=T, padding="max_length")``, also
    for tokenizers without a pad token (they pad with ``pad_id_of``). A ``TextEncoder`` encodes
    with its own ``encode_padded``.
    """
    if isinstance(tokenizer, TextEncoder) and not is_hf_tokenizer(tokenizer):
        return tokenizer.encode_padded(texts, max_length)
    rows = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return pad_rows(rows, max_length, pad_id_of(tokenizer))


@dataclasses.dataclass(frozen=True, eq=False)
class TextBridge:
    """Policy ids -> reward-model ids through decoded text (see the module docstring).

    Attributes:
      policy_tokenizer: the policy's HF tokenizer.
      reward_tokenizer: the reward model's HF tokenizer.
      max_length: T, the reward model's sequence length (special tokens included).
      special_ids: (S,) int32 special ids of the policy tokenizer (skipped when decoding).
    """

    policy_tokenizer: Any
    reward_tokenizer: Any
    max_length: int
    special_ids: np.ndarray

    def length(self, policy_length: int) -> int:
        """Static reward-model length T (the same for every policy length)."""
        del policy_length
        return self.max_length

    def content_mask(self, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """(B, L) -> bool (B, L): the tokens under ``mask`` that are not special tokens."""
        return content_mask(self.special_ids, token_ids, mask)

    def inputs(self, token_ids: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``retokenize(self, token_ids, mask)``: (B, T) reward-model ids and attention mask."""
        return retokenize(self, token_ids, mask)


def build_text_bridge(policy_tokenizer: Any, reward_tokenizer: Any, *, max_length: int = 128) -> TextBridge:
    """A ``TextBridge`` from the policy's tokenizer to a reward model's.

    Args:
      policy_tokenizer: e.g. LLaMA's ``LlamaTokenizerFast``.
      reward_tokenizer: e.g. the MiniLM's ``BertTokenizerFast`` (``TextModel.tokenizer``), or a
        ``TextEncoder``.
      max_length: T, the reward model's input length, special tokens included.

    Raises:
      ValueError: if either is not a HF tokenizer or T leaves no room besides the specials.
    """
    if not is_hf_tokenizer(policy_tokenizer):
        raise ValueError(
            f"The policy tokenizer must be a transformers tokenizer, got {type(policy_tokenizer)}."
        )
    if not is_hf_tokenizer(reward_tokenizer) and not isinstance(reward_tokenizer, TextEncoder):
        raise ValueError(
            "The reward tokenizer must be a transformers tokenizer or a TextEncoder, got "
            f"{type(reward_tokenizer)}."
        )
    specials = reward_tokenizer.num_special_tokens_to_add(pair=False)
    if max_length < specials + 1:
        raise ValueError(f"max_length must leave room for one token besides the specials, got {max_length}.")
    return TextBridge(policy_tokenizer, reward_tokenizer, int(max_length), special_ids(policy_tokenizer))


def retokenize_host(
    bridge: TextBridge, token_ids: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The bridge on the host: (…, L) policy ids (and mask) -> (…, T) int32 reward ids and mask.

    Any leading dimensions are kept (``vmap`` hands the callback a (M, B, L) batch).
    """
    token_ids = np.asarray(token_ids)
    leading, length = token_ids.shape[:-1], token_ids.shape[-1]
    flat_mask = None if mask is None else np.broadcast_to(mask, token_ids.shape).reshape(-1, length)
    texts = decode_texts(bridge.policy_tokenizer, token_ids.reshape(-1, length), flat_mask)
    input_ids, attention_mask = encode_padded(bridge.reward_tokenizer, texts, bridge.max_length)
    shape = (*leading, bridge.max_length)
    return input_ids.reshape(shape), attention_mask.reshape(shape)


def retokenize(
    bridge: TextBridge, token_ids: jax.Array, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Reward-model inputs of policy ids, inside ``jit``/``vmap`` (one ``jax.pure_callback``).

    Args:
      bridge: from ``build_text_bridge``.
      token_ids: (B, L) integer policy ids (e.g. a left-padded prompt and its response).
      mask: (B, L) bool/0-1, the tokens to decode (e.g. prompt mask and ``Sample.mask``
        concatenated); None: every token (special tokens are skipped either way).

    Returns:
      input_ids: (B, T) int32 reward-model ids, the reward tokenizer's pad id after the text.
      attention_mask: (B, T) int32, 1 on the text's tokens (special tokens included).
    """
    token_ids = jnp.asarray(token_ids)
    if token_ids.ndim != 2 or not jnp.issubdtype(token_ids.dtype, jnp.integer):
        raise ValueError(
            f"token_ids must be (B, L) integer policy ids; got shape {token_ids.shape}, "
            f"dtype {token_ids.dtype}."
        )
    mask = jnp.ones(token_ids.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
    if mask.shape != token_ids.shape:
        raise ValueError(f"mask must have the shape of token_ids {token_ids.shape}, got {mask.shape}.")
    result = jax.ShapeDtypeStruct((token_ids.shape[0], bridge.max_length), jnp.int32)

    def host(ids: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return retokenize_host(bridge, ids, keep)

    return jax.pure_callback(
        host, (result, result), token_ids.astype(jnp.int32), mask, vmap_method="broadcast_all"
    )
