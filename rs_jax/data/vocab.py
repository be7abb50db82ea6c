"""A word-level vocabulary shared by the scene world, the COCO loaders and the text rewards,
with the location-token words of the grounding models (``with_location_tokens``).

Ids 0..3 are the special tokens ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; every encoded
sequence is left-aligned, ends with ``<eos>`` and is padded with ``<pad>`` (id 0), so rewards
on token ids can find a sequence's end without a separate length array.

>>> vocab = Vocabulary.from_words(["a", "red", "circle"])
>>> vocab.encode("a red circle", max_length=6).tolist()
[4, 5, 6, 2, 0, 0]
>>> vocab.decode([4, 5, 6, 2, 0, 0])
'a red circle'
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

_WORD_PATTERN = re.compile(r"[^\W_]+|[^\w\s]")
_SPACE_BEFORE_PUNCTUATION = re.compile(r" ([,.?!;:])")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: "Is it red?" -> ["is", "it", "red", "?"]."""
    return _WORD_PATTERN.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Word <-> id table; ``words[i]`` is the word of id ``i``, the first four are the specials.

    Attributes:
      words: every word in id order, starting with ``SPECIAL_TOKENS``.
    """

    words: tuple[str, ...]
    _index: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    def __post_init__(self) -> None:
        words = tuple(self.words)
        if words[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"A vocabulary must start with {SPECIAL_TOKENS}, got {words[:4]}.")
        duplicates = [word for word, count in collections.Counter(words).items() if count > 1]
        if duplicates:
            raise ValueError(f"Duplicate words in vocabulary: {sorted(duplicates)[:10]}.")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "_index", {word: i for i, word in enumerate(words)})

    @classmethod
    def from_words(cls, words: Iterable[str]) -> Vocabulary:
        """The specials followed by ``words`` in the given order (duplicates and specials dropped)."""
        ordered = dict.fromkeys(word for word in words if word not in SPECIAL_TOKENS)
        return cls(SPECIAL_TOKENS + tuple(ordered))

    @classmethod
    def build(
        cls, token_lists: Iterable[Sequence[str]], min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """A vocabulary of a corpus: words seen at least ``min_count`` times, most frequent first.

        Ties are broken alphabetically, so the same corpus always gives the same ids.

        Args:
          token_lists: one list of words per sentence.
          min_count: minimum number of occurrences of a kept word.
          max_size: optional cap on the total size, specials included.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}.")
        counts = collections.Counter(word for tokens in token_lists for word in tokens)
        kept = sorted((word for word, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            if max_size < len(SPECIAL_TOKENS):
                raise ValueError(f"max_size must be >= {len(SPECIAL_TOKENS)}, got {max_size}.")
            kept = [w for w in kept if w not in SPECIAL_TOKENS][: max_size - len(SPECIAL_TOKENS)]
        return cls.from_words(kept)

    @property
    def size(self) -> int:
        """Number of ids, specials included."""
        return len(self.words)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def id(self, word: str) -> int:
        """Id of ``word``; ``unk_id`` if unknown."""
        return self._index.get(word, UNK_ID)

    def encode(self, text: str | Sequence[str], max_length: int) -> np.ndarray:
        """(max_length,) int32 ids: the words, ``<eos>``, then ``<pad>``.

        A string is split by ``tokenize``; a list is taken as words. Text longer than
        ``max_length - 1`` words is cut so that the ``<eos>`` always fits.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        words = tokenize(text) if isinstance(text, str) else list(text)
        ids = [self.id(word) for word in words[: max_length - 1]] + [EOS_ID]
        out = np.full((max_length,), PAD_ID, np.int32)
        out[: len(ids)] = ids
        return out

    def encode_batch(self, texts: Sequence[str | Sequence[str]], max_length: int) -> np.ndarray:
        """(N, max_length) int32 ids of N texts (see ``encode``)."""
        out = np.full((len(texts), max_length), PAD_ID, np.int32)
        for row, text in enumerate(texts):
            out[row] = self.encode(text, max_length)
        return out

    def decode_words(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """The words of ``ids`` up to the first ``<eos>`` or ``<pad>``; ``<bos>`` is skipped."""
        words = []
        for token in np.asarray(ids).reshape(-1).tolist():
            if token in (EOS_ID, PAD_ID):
                break
            if token == BOS_ID:
                continue
            words.append(self.words[token] if 0 <= token < len(self.words) else UNK)
        return words

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids`` (see ``decode_words``), punctuation attached to the previous word."""
        return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(self.decode_words(ids)))

    def to_json(self) -> str:
        return json.dumps({"words": list(self.words)})

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("words"), list):
            raise ValueError('A vocabulary JSON must be an object {"words": [...]}.')
        return cls(tuple(data["words"]))

    def save(self, path: str | os.PathLike) -> None:
        """Writes ``{"words": [...]}`` to ``path``."""
        with open(path, "w", encoding="utf-8") as file:
            file.write(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a vocabulary written by ``save``."""
        with open(path, encoding="utf-8") as file:
            text = file.read()
        try:
            return cls.from_json(text)
        except (json.JSONDecodeError, ValueError) as error:
            raise ValueError(f"{path}: not a vocabulary file ({error}).") from error


def with_location_tokens(vocabulary: Vocabulary, num_bins: int) -> tuple[Vocabulary, int]:
    """A vocabulary extended by the words ``<loc_0>`` … ``<loc_{num_bins-1}>`` after its words.

    The words keep their ids, so text encoded with ``vocabulary`` stays valid; the token of bin
    b is ``first_location_id + b`` (the codec of ``rs_jax.models.locations``).

    Returns:
      (extended vocabulary, id of ``<loc_0>``).

    Raises:
      ValueError: if ``vocabulary`` already holds location tokens.
    """
    if "<loc_0>" in vocabulary:
        raise ValueError("The vocabulary already has location tokens.")
    location_words = tuple(f"<loc_{index}>" for index in range(num_bins))
    return Vocabulary(vocabulary.words + location_words), vocabulary.size
