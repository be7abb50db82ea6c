"""Prompts of a real dataset, read from a local file and tokenized by the policy's own HF tokenizer.

The text RLHF task prompts a pre-trained causal LM with the beginnings of real texts (the
paper's movie-review task: IMDB reviews). A prompts file is either

* JSONL (``.jsonl`` / ``.json`` lines): one JSON object per line with a ``"prompt"`` or
  ``"text"`` string field (``"prompt"`` wins when both are present), or
* plain text (any other suffix): one prompt per line.

Blank lines are skipped. ``tokenize_prompts`` tokenizes them with the policy's tokenizer
(its special tokens included, e.g. LLaMA's ``<s>``), keeps the **first** ``length`` tokens
(the beginning of a review is the prompt) and left-pads them: the layout
``rs_jax.models.causal_lm.generate`` expects (every prompt ends at column P-1).

``movie_review_prompts`` builds the paper's movie-review prompts (Table 1: "Generate a movie
review.") through a chat model's template, each continued by the first words of a real
Rotten Tomatoes snippet (``rs_jax.data.rated_text``).

>>> texts = read_prompts("imdb_prompts.jsonl")  # doctest: +SKIP
>>> ids, mask = tokenize_prompts(texts, tokenizer, length=8)  # doctest: +SKIP
>>> ids.shape, mask[:, -1].all()  # doctest: +SKIP
((25000, 8), True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

TEXT_FIELDS = ("prompt", "text")
MOVIE_REVIEW_INSTRUCTION = "Generate a movie review."


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The prompts of a JSONL or plain-text file (see the module docstring), in file order.

    Raises:
      ValueError: if the file is missing, holds no prompt, or a JSONL line is not an object
        with a string ``"prompt"``/``"text"`` field (naming the line).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Prompts file {path!r} does not exist.")
    jsonl = path.endswith((".jsonl", ".json"))
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            if not jsonl:
                prompts.append(line)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
            text = next(
                (record[field] for field in TEXT_FIELDS if isinstance(record, dict) and field in record),
                None,
            )
            if not isinstance(text, str):
                raise ValueError(
                    f"{path}, line {number}: expected a JSON object with a string field "
                    f"{' or '.join(repr(field) for field in TEXT_FIELDS)}, got {line[:80]!r}."
                )
            if text.strip():
                prompts.append(text.strip())
    if not prompts:
        raise ValueError(f"Prompts file {path!r} holds no prompt (only blank lines or empty texts).")
    return prompts


def pad_id_of(tokenizer: Any) -> int:
    """The id a tokenizer pads with: its pad token, else its EOS (LLaMA has no pad), else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def pad_rows(
    rows: Sequence[Sequence[int]], width: int, pad_id: int, *, side: Literal["left", "right"] = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """Token-id rows of at most ``width`` ids as one padded array and its mask (host, numpy).

    Args:
      rows: N lists of ids, each at most ``width`` long.
      width: W, the number of columns.
      pad_id: the id put on the padding.
      side: where the padding goes.

    Returns:
      ids: (N, W) int32.
      mask: (N, W) int32, 1 on the ids of ``rows``, 0 on the padding.
    """
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
        if len(row) > width:
            raise ValueError(f"Row {i} has {len(row)} ids, more than the width {width}.")
        columns = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, columns] = row
        mask[i, columns] = 1
    return ids, mask


def tokenize_prompts(texts: Sequence[str], tokenizer: Any, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded prompts for ``causal_lm.generate``, tokenized by the policy's tokenizer.

    Args:
      texts: M prompt texts.
      tokenizer: the policy's HF tokenizer (its special tokens are added, e.g. ``<s>``).
      length: P; each prompt keeps its first P tokens.

    Returns:
      ids: (M, P) int32, the tokenizer's pad id (``pad_id_of``) on the left.
      mask: (M, P) int32, 0 on the pads, 1 on the prompt tokens.

    Raises:
      ValueError: on an empty list, P < 1, or a text that tokenizes to no token.
    """
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty sequence of prompt strings.")
    if length < 1:
        raise ValueError(f"The prompt length must be >= 1, got {length}.")
    rows = tokenizer(list(texts), truncation=True, max_length=length)["input_ids"]
    empty = [i for i, row in enumerate(rows) if not row]
    if empty:
        raise ValueError(f"Prompt {empty[0]} ({texts[empty[0]]!r}) tokenizes to no token.")
    return pad_rows(rows, length, pad_id_of(tokenizer), side="left")


def movie_review_prompts(
    tokenizer: Any,
    *,
    num_words: int = 4,
    count: int | None = None,
    seed: int = 0,
    instruction: str = MOVIE_REVIEW_INSTRUCTION,
    beginnings: Sequence[str] | None = None,
) -> list[str]:
    """Chat prompts asking for a movie review, the answer started with a real snippet's first words.

    Each prompt is ``tokenizer.apply_chat_template([user: instruction], add_generation_prompt=True)``
    (the template's special tokens as text, which the tokenizer maps back to their ids) followed by
    the first ``num_words`` whitespace-separated words of a movie-review snippet. Tokenize them
    with ``tokenize_prompts`` (a template that starts with the BOS text needs a tokenizer that
    does not add another, as SmolLM2's).

    Args:
      tokenizer: the policy's HF tokenizer, with a chat template.
      num_words: words of each snippet kept as the beginning of the answer (0: none).
      count: how many prompts; None: one per snippet.
      seed: ``numpy`` seed of the random choice of ``count`` snippets (without replacement).
      instruction: the user message.
      beginnings: the texts whose beginnings are used; None: the 10,605 movie-review snippets
        of the ``vader`` asset (fetched on first use).

    Returns:
      ``count`` prompt strings, in snippet order.

    Raises:
      ValueError: if the tokenizer has no chat template, or on a bad ``num_words``/``count``.
    """
    header = chat_header(tokenizer, instruction)
    if num_words < 0:
        raise ValueError(f"num_words must be >= 0, got {num_words}.")
    if beginnings is None:
        from rs_jax.data.rated_text import read_rated_texts

        beginnings = read_rated_texts("movie_reviews").texts
    if count is not None:
        if not 1 <= count <= len(beginnings):
            raise ValueError(f"count must be in 1..{len(beginnings)}, got {count}.")
        chosen = np.sort(np.random.default_rng(seed).choice(len(beginnings), count, replace=False))
        beginnings = [beginnings[i] for i in chosen]
    return [header + " ".join(text.split()[:num_words]) for text in beginnings]


def chat_header(tokenizer: Any, instruction: str = MOVIE_REVIEW_INSTRUCTION) -> str:
    """The chat template's text up to the assistant's answer for one user message."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{type(tokenizer).__name__} has no chat template; load a chat model's tokenizer.")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
    )
