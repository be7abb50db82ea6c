"""Caption metrics on token ids as batched, jit-able per-sentence rewards.

BLEU, ROUGE-L, CIDEr-D and METEOR (exact matches only) for self-critical
captioning, in pure ``jax.numpy`` with static shapes, so a reward is computed
inside the compiled training step.

Conventions shared by every metric:

* ``candidates`` is ``(B, Lc)`` and ``references`` is ``(B, K, Lr)``, integer
  token ids (one token = one word). Sequences are left-aligned; everything from
  the first ``pad_id`` on is ignored. ``Lc`` and ``Lr`` may differ.
* An all-pad reference row is a missing reference (an image with fewer than K
  captions) and is ignored; a candidate with no reference at all scores 0.
* N-grams are matched exactly, by comparing tokens pairwise (an
  ``(L, L)`` equality matrix per n-gram order, built from the unigram one by
  shifting), never by hashing. Memory is ``O(B·K·Lc·Lr)``: fine for
  captions (L ≤ 64). CIDEr-D's document frequencies are looked up by binary
  search in a lexicographically sorted table of the training n-grams, again
  exact, for any int32 vocabulary.
* Every metric is one compiled program per input shape; only ``max_order``
  is static, so other options (pad id, smoothing, β…) change without a
  recompile, and the functions also run inside a caller's ``jit``.

Each metric reproduces a reference implementation to float32 precision (see
``tests/test_text_metrics.py``): BLEU = nltk ``sentence_bleu``, ROUGE-L and
CIDEr-D = pycocoevalcap, METEOR = nltk ``meteor_score`` without stems or
synonyms.

>>> import jax.numpy as jnp
>>> from rs_jax.rewards import text_metrics
>>> cand = jnp.array([[1, 2, 3, 0]])
>>> refs = jnp.array([[[1, 2, 3, 0], [0, 0, 0, 0]]])
>>> text_metrics.rouge_l(cand, refs)
Array([1.], dtype=float32)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

BLEU_SMOOTHINGS = ("epsilon", "add1", "none")
REWARD_NAMES = ("bleu1", "bleu4", "rouge", "cider", "meteor")


# --------------------------------------------------------------------------- shared pieces


def _check_pair(candidates: jax.Array, references: jax.Array) -> None:
    c_shape, r_shape = jnp.shape(candidates), jnp.shape(references)
    if len(c_shape) != 2:
        raise ValueError(f"candidates must be (B, L) token ids; got shape {c_shape}.")
    if len(r_shape) != 3:
        raise ValueError(
            f"references must be (B, K, L) token ids (K references per candidate); got shape {r_shape}."
        )
    if r_shape[0] != c_shape[0]:
        raise ValueError(
            f"candidates and references disagree on the batch size: {c_shape[0]} vs {r_shape[0]} "
            f"(shapes {c_shape} and {r_shape})."
        )
    for name, array in (("candidates", candidates), ("references", references)):
        if not jnp.issubdtype(jnp.result_type(array), jnp.integer):
            raise ValueError(f"{name} must hold integer token ids; got dtype {jnp.result_type(array)}.")


def _as_ids(candidates: jax.Array, references: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(candidates, jnp.int32), jnp.asarray(references, jnp.int32)


def _valid(tokens: jax.Array, pad_id: int) -> jax.Array:
    """(..., L) -> bool (..., L): True strictly before the first pad."""
    return jnp.cumsum(tokens == pad_id, axis=-1) == 0


def _ngram_equal(
    a: jax.Array, a_valid: jax.Array, b: jax.Array, b_valid: jax.Array, max_order: int
) -> jax.Array:
    """Exact n-gram equality of every position pair, n = 1..max_order.

    Args:
      a: (..., La) tokens; b: (..., Lb) tokens, same rank as ``a``.
      a_valid, b_valid: masks of the same shapes.
      max_order: largest n.

    Returns:
      (max_order, ..., La, Lb) bool; [n-1, ..., i, j] is True iff the n-grams
      a[i:i+n] and b[j:j+n] both lie inside the sentences and are equal.
    """
    unigram = (a[..., :, None] == b[..., None, :]) & a_valid[..., :, None] & b_valid[..., None, :]
    equal = [unigram]
    lead = [(0, 0)] * (unigram.ndim - 2)
    a_len, b_len = unigram.shape[-2:]
    for n in range(2, max_order + 1):
        # (i, j) of the n-gram needs (i+n-1, j+n-1) equal too; out of range pads False.
        shifted = unigram[..., n - 1 :, n - 1 :]
        shifted = jnp.pad(shifted, [*lead, (0, a_len - shifted.shape[-2]), (0, b_len - shifted.shape[-1])])
        equal.append(equal[-1] & shifted)
    return jnp.stack(equal)


def _counts_and_first(self_equal: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(..., L, L) n-gram self-equality -> (count of each position's n-gram, first occurrence mask)."""
    length = self_equal.shape[-1]
    earlier = jnp.tril(jnp.ones((length, length), bool), -1)
    earlier = jnp.reshape(earlier, (1,) * (self_equal.ndim - 2) + earlier.shape)
    in_range = jnp.diagonal(self_equal, axis1=-2, axis2=-1)
    first = in_range & ~jnp.any(self_equal & earlier, axis=-1)
    return self_equal.sum(axis=-1), first


def _safe_div(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, 0 where the denominator is 0."""
    nonzero = denominator != 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0.0)


# --------------------------------------------------------------------------- BLEU


def bleu(
    candidates: jax.Array,
    references: jax.Array,
    *,
    max_order: int = 4,
    pad_id: int = 0,
    smoothing: str = "epsilon",
    epsilon: float = 0.1,
) -> jax.Array:
    """Sentence BLEU-1..BLEU-``max_order`` of each candidate, as nltk's ``sentence_bleu``.

    BLEU-n = BP · exp(Σ_{m≤n} log pₘ / n) with pₘ the modified m-gram precision
    (candidate counts clipped by the maximum count over the references) and
    BP = exp(1 − r/c) for c ≤ r (1 if c > r, 0 if c = 0), r the reference length
    closest to c (ties to the shorter). As in nltk, a candidate with no unigram
    match scores 0 at every order whatever the smoothing.

    Args:
      candidates: (B, Lc) integer token ids.
      references: (B, K, Lr) integer token ids; all-pad rows are ignored.
      max_order: largest n-gram order.
      pad_id: padding id.
      smoothing: for zero precisions, ``"epsilon"`` (nltk ``SmoothingFunction(epsilon).method1``:
        pₘ = ε / #m-grams when no m-gram matches), ``"add1"`` (nltk ``method2``, Lin & Och 2004:
        pₘ = (matches + 1) / (#m-grams + 1) for m ≥ 2) or ``"none"`` (BLEU-n = 0 as soon as some
        pₘ, m ≤ n, is 0; nltk ``method0`` returns ~1e-77 there).
      epsilon: ε of the ``"epsilon"`` smoothing.

    Returns:
      (B, max_order) float32; column n-1 is BLEU-n.

    Raises:
      ValueError: on bad shapes or dtypes, ``max_order < 1`` or an unknown smoothing.
    """
    _check_pair(candidates, references)
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}.")
    if smoothing not in BLEU_SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {BLEU_SMOOTHINGS}, got {smoothing!r}.")
    return _bleu(candidates, references, max_order, BLEU_SMOOTHINGS.index(smoothing), pad_id, epsilon)


@functools.partial(jax.jit, static_argnums=2)
def _bleu(candidates, references, max_order, smoothing, pad_id, epsilon):
    candidates, references = _as_ids(candidates, references)
    c_valid, r_valid = _valid(candidates, pad_id), _valid(references, pad_id)
    c_len, r_len = c_valid.sum(-1), r_valid.sum(-1)
    has_ref = r_len > 0

    self_equal = _ngram_equal(candidates, c_valid, candidates, c_valid, max_order)  # (N, B, Lc, Lc)
    cross = _ngram_equal(candidates[:, None], c_valid[:, None], references, r_valid, max_order)
    counts, first = _counts_and_first(self_equal)  # (N, B, Lc)
    max_ref_counts = cross.sum(-1).max(axis=2)  # (N, B, Lc); all-pad references count 0
    clipped = jnp.where(first, jnp.minimum(counts, max_ref_counts), 0).sum(-1)
    numerators = clipped.T.astype(jnp.float32)  # (B, N)
    orders = jnp.arange(1, max_order + 1)
    denominators = jnp.maximum(c_len[:, None] - orders[None, :] + 1, 1).astype(jnp.float32)

    # The smoothing is an index into BLEU_SMOOTHINGS, traced, so changing it does not recompile.
    precisions = jnp.select(
        [smoothing == 0, smoothing == 1],
        [
            jnp.where(numerators > 0, numerators, epsilon) / denominators,
            jnp.where(orders[None, :] == 1, numerators / denominators, (numerators + 1) / (denominators + 1)),
        ],
        numerators / denominators,
    )
    positive = precisions > 0
    log_precisions = jnp.log(jnp.where(positive, precisions, 1.0))
    geometric = jnp.exp(jnp.cumsum(log_precisions, axis=-1) / orders[None, :])
    all_positive = jnp.cumprod(positive, axis=-1).astype(bool)

    distance = jnp.where(has_ref, jnp.abs(r_len - c_len[:, None]), jnp.iinfo(jnp.int32).max)
    closest = distance == distance.min(axis=1, keepdims=True)
    ref_len = jnp.where(has_ref & closest, r_len, jnp.iinfo(jnp.int32).max).min(axis=1)
    ratio = ref_len.astype(jnp.float32) / jnp.maximum(c_len, 1).astype(jnp.float32)
    brevity = jnp.where(c_len > ref_len, 1.0, jnp.where(c_len == 0, 0.0, jnp.exp(1.0 - ratio)))

    scored = all_positive & (numerators[:, :1] > 0) & jnp.any(has_ref, axis=1)[:, None]
    return jnp.where(scored, brevity[:, None] * geometric, 0.0).astype(jnp.float32)


# --------------------------------------------------------------------------- ROUGE-L


def _lcs_lengths(
    candidates: jax.Array, c_valid: jax.Array, references: jax.Array, r_valid: jax.Array
) -> jax.Array:
    """(B, Lc), (B, K, Lr) -> (B, K) int32 length of the longest common subsequence.

    One ``lax.scan`` step per candidate token updates a whole DP row: with
    tᵢⱼ = max(L[i-1][j], L[i-1][j-1] + 1 if match), L[i][j] = max_{j'≤j} tᵢⱼ' (a
    matched diagonal step is never below its left/upper neighbours, so the usual
    recurrence is this running max). Positions past a sentence's end never
    match, so they leave the LCS of the valid prefixes unchanged.
    """
    batch, num_refs, ref_len = references.shape
    zeros = jnp.zeros((batch, num_refs, 1), jnp.int32)

    def step(previous, inputs):
        token, valid = inputs
        match = (references == token[:, None, None]) & r_valid & valid[:, None, None]
        diagonal = jnp.where(match, previous[..., :-1] + 1, 0)
        row = jax.lax.cummax(jnp.maximum(previous[..., 1:], diagonal), axis=2)
        return jnp.concatenate([zeros, row], axis=-1), None

    init = jnp.zeros((batch, num_refs, ref_len + 1), jnp.int32)
    final, _ = jax.lax.scan(step, init, (candidates.T, c_valid.T))
    return final[..., -1]


def rouge_l(candidates: jax.Array, references: jax.Array, *, beta: float = 1.2, pad_id: int = 0) -> jax.Array:
    """ROUGE-L of each candidate as pycocoevalcap's ``Rouge`` (the COCO caption metric).

    With P_k = LCS_k / |c| and R_k = LCS_k / |r_k| for each present reference,
    P = max_k P_k, R = max_k R_k (maximised separately) and
    F = (1 + β²) P R / (R + β² P), 0 when P or R is 0. With one reference and
    ``beta=1`` this is the ``rouge-score`` package's ROUGE-L F1.

    Args:
      candidates: (B, Lc) integer token ids.
      references: (B, K, Lr) integer token ids; all-pad rows are ignored.
      beta: recall weight (1.2 in pycocoevalcap).
      pad_id: padding id.

    Returns:
      (B,) float32.
    """
    _check_pair(candidates, references)
    return _rouge_l(candidates, references, beta, pad_id)


@jax.jit
def _rouge_l(candidates, references, beta, pad_id):
    candidates, references = _as_ids(candidates, references)
    c_valid, r_valid = _valid(candidates, pad_id), _valid(references, pad_id)
    c_len, r_len = c_valid.sum(-1), r_valid.sum(-1)
    has_ref = r_len > 0
    lcs = _lcs_lengths(candidates, c_valid, references, r_valid).astype(jnp.float32)
    precision = jnp.where(has_ref, _safe_div(lcs, c_len[:, None].astype(jnp.float32)), 0.0).max(axis=1)
    recall = jnp.where(has_ref, _safe_div(lcs, r_len.astype(jnp.float32)), 0.0).max(axis=1)
    beta2 = beta**2
    score = _safe_div((1 + beta2) * precision * recall, recall + beta2 * precision)
    return jnp.where((precision > 0) & (recall > 0), score, 0.0).astype(jnp.float32)


# --------------------------------------------------------------------------- CIDEr-D


class CiderStats(NamedTuple):
    """Document frequencies of the training references, the idf of CIDEr-D.

    Attributes:
      ngrams: (T, 1 + max_order) int32, one row per distinct n-gram:
        ``(n, t₁, …, tₙ, 0, …, 0)``, sorted lexicographically, so lookups are an
        exact binary search (no hashing: any int32 vocabulary is supported).
        T is padded to a power of two with filler rows ``(2³¹−1, 0, …)``.
      document_frequency: (T,) float32, the number of reference sets (images)
        in which each n-gram occurs in at least one reference (0 for filler).
      log_num_ref_sets: () float32, log of the number of reference sets.
    """

    ngrams: jax.Array
    document_frequency: jax.Array
    log_num_ref_sets: jax.Array


def cider_document_frequencies(references: np.ndarray, *, max_order: int = 4, pad_id: int = 0) -> CiderStats:
    """Counts, on the host, the document frequencies CIDEr-D uses as idf.

    As pycocoevalcap's ``CiderScorer.compute_doc_freq`` on the training
    references (and ``ref_len = log(number of reference sets)``, the value the
    self-critical CIDEr-D optimisers load with their training df). A reference
    set whose references are all padding is not counted.

    Args:
      references: (N, K, L) integer token ids of the training references.
      max_order: largest n-gram order (4 for CIDEr-D).
      pad_id: padding id.

    Returns:
      ``CiderStats``; its shapes depend on the data (T distinct n-grams, padded
      to a power of two), so ``cider_d`` compiles once per table size.

    Raises:
      ValueError: on a bad shape or dtype, ids outside int32, or no n-gram at all.
    """
    refs = np.asarray(references)
    if refs.ndim != 3:
        raise ValueError(f"references must be (N, K, L) token ids; got shape {refs.shape}.")
    if not np.issubdtype(refs.dtype, np.integer):
        raise ValueError(f"references must hold integer token ids; got dtype {refs.dtype}.")
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}.")
    info = np.iinfo(np.int32)
    if refs.size and (refs.min() < info.min or refs.max() > info.max):
        raise ValueError("Token ids must fit in int32.")
    refs = refs.astype(np.int64)
    num_sets, _, length = refs.shape
    lengths = (np.cumsum(refs == pad_id, axis=-1) == 0).sum(-1)  # (N, K)
    present = int((lengths > 0).any(axis=-1).sum())
    tables, frequencies = [], []
    for n in range(1, min(max_order, length) + 1):
        windows = np.lib.stride_tricks.sliding_window_view(refs, n, axis=-1)  # (N, K, L-n+1, n)
        inside = np.arange(length - n + 1)[None, None, :] + n <= lengths[..., None]
        owner = np.broadcast_to(np.arange(num_sets)[:, None, None], inside.shape)[inside]
        grams = windows[inside]
        if grams.shape[0] == 0:
            continue
        # One count per reference set, however often the n-gram occurs in it.
        per_set = np.unique(np.concatenate([owner[:, None], grams], axis=1), axis=0)
        unique, counts = np.unique(per_set[:, 1:], axis=0, return_counts=True)  # lexicographic
        table = np.zeros((unique.shape[0], 1 + max_order), np.int64)
        table[:, 0] = n
        table[:, 1 : 1 + n] = unique
        tables.append(table)
        frequencies.append(counts)
    if not tables:
        raise ValueError("The references contain no n-gram (all padding?): no document frequencies.")
    # Blocks are in increasing n, the first column, so the concatenation stays sorted.
    table, frequency = np.concatenate(tables), np.concatenate(frequencies)
    # Padding T to a power of two lets tables of similar sizes share one compiled cider_d.
    # Filler rows sort last (order = int32 max, never queried) and have df 0.
    filler = (1 << (table.shape[0] - 1).bit_length()) - table.shape[0]
    table = np.concatenate([table, np.zeros((filler, table.shape[1]), np.int64)])
    table[table.shape[0] - filler :, 0] = info.max
    frequency = np.concatenate([frequency, np.zeros(filler, frequency.dtype)])
    return CiderStats(
        ngrams=jnp.asarray(table.astype(np.int32)),
        document_frequency=jnp.asarray(frequency.astype(np.float32)),
        log_num_ref_sets=jnp.asarray(np.float32(np.log(present))),
    )


def _lookup_frequency(stats: CiderStats, queries: jax.Array) -> jax.Array:
    """(..., 1 + max_order) int32 n-gram rows -> (...) document frequency, 0 if unseen.

    Lexicographic lower-bound binary search over the sorted table: a fixed
    ⌈log₂(T+1)⌉ steps, vectorised over all queries.
    """
    table, frequency = stats.ngrams, stats.document_frequency
    size = table.shape[0]

    def lex_less(rows, keys):
        less = rows[..., -1] < keys[..., -1]
        for column in range(rows.shape[-1] - 2, -1, -1):
            less = (rows[..., column] < keys[..., column]) | ((rows[..., column] == keys[..., column]) & less)
        return less

    def step(_, bounds):
        low, high = bounds
        middle = (low + high) // 2
        less = lex_less(table[jnp.minimum(middle, size - 1)], queries)
        open_ = low < high
        return jnp.where(open_ & less, middle + 1, low), jnp.where(open_ & ~less, middle, high)

    low = jnp.zeros(queries.shape[:-1], jnp.int32)
    high = jnp.full(queries.shape[:-1], size, jnp.int32)
    low, _ = jax.lax.fori_loop(0, size.bit_length(), step, (low, high))
    index = jnp.minimum(low, size - 1)
    found = (low < size) & jnp.all(table[index] == queries, axis=-1)
    return jnp.where(found, frequency[index], 0.0)


def _ngram_rows(tokens: jax.Array, max_order: int) -> jax.Array:
    """(..., L) -> (max_order, ..., L, 1 + max_order) table keys ``(n, t_i, …, t_{i+n-1}, 0…)``."""
    length = tokens.shape[-1]
    padded = jnp.pad(tokens, [*[(0, 0)] * (tokens.ndim - 1), (0, max_order - 1)])
    windows = jnp.stack([padded[..., o : o + length] for o in range(max_order)], axis=-1)  # (..., L, N)
    orders = jnp.arange(1, max_order + 1, dtype=jnp.int32)
    used = jnp.arange(max_order)[None, :] < orders[:, None]  # (N, N): column m is in the n-gram
    expand = (1,) * tokens.ndim
    keys = jnp.where(used.reshape(max_order, *expand, max_order), windows[None], 0)
    order_column = jnp.broadcast_to(orders.reshape(max_order, *expand, 1), (*keys.shape[:-1], 1))
    return jnp.concatenate([order_column, keys], axis=-1)


def cider_d(
    candidates: jax.Array,
    references: jax.Array,
    stats: CiderStats,
    *,
    sigma: float = 6.0,
    pad_id: int = 0,
) -> jax.Array:
    """CIDEr-D of each candidate, as pycocoevalcap's ``CiderScorer`` (which is CIDEr-D).

    For n = 1..max_order, every sentence is a tf-idf vector
    g(w) = tf(w) · (log N − log max(1, df(w))); the candidate-reference
    similarity is Σ_w min(g_c(w), g_r(w)) · g_r(w) / (‖g_c‖ ‖g_r‖) (clipped
    counts), times the Gaussian length penalty exp(−δ²/2σ²). The score is 10 ×
    the mean over n of the mean over present references. As in pycocoevalcap,
    δ is the difference of the sentences' bigram counts (max(len − 1, 0)).

    Args:
      candidates: (B, Lc) integer token ids.
      references: (B, K, Lr) integer token ids; all-pad rows are ignored.
      stats: document frequencies of the training references
        (``cider_document_frequencies``); its table width sets max_order.
      sigma: length-penalty width.
      pad_id: padding id.

    Returns:
      (B,) float32.
    """
    _check_pair(candidates, references)
    if stats.ngrams.ndim != 2 or stats.ngrams.shape[-1] < 2:
        raise ValueError(f"stats.ngrams must be (T, 1 + max_order); got shape {stats.ngrams.shape}.")
    return _cider_d(candidates, references, stats, sigma, pad_id)


@jax.jit
def _cider_d(candidates, references, stats, sigma, pad_id):
    max_order = stats.ngrams.shape[-1] - 1
    candidates, references = _as_ids(candidates, references)
    c_valid, r_valid = _valid(candidates, pad_id), _valid(references, pad_id)
    c_len, r_len = c_valid.sum(-1), r_valid.sum(-1)
    has_ref = r_len > 0

    c_self = _ngram_equal(candidates, c_valid, candidates, c_valid, max_order)  # (N, B, Lc, Lc)
    r_self = _ngram_equal(references, r_valid, references, r_valid, max_order)  # (N, B, K, Lr, Lr)
    cross = _ngram_equal(candidates[:, None], c_valid[:, None], references, r_valid, max_order)
    c_rows, r_rows = _ngram_rows(candidates, max_order), _ngram_rows(references, max_order)
    width = max_order + 1
    frequency = _lookup_frequency(
        stats, jnp.concatenate([c_rows.reshape(-1, width), r_rows.reshape(-1, width)])
    )
    split = c_rows.size // width
    c_idf = stats.log_num_ref_sets - jnp.log(jnp.maximum(1.0, frequency[:split].reshape(c_rows.shape[:-1])))
    r_idf = stats.log_num_ref_sets - jnp.log(jnp.maximum(1.0, frequency[split:].reshape(r_rows.shape[:-1])))
    c_counts, c_first = _counts_and_first(c_self)  # (N, B, Lc)
    r_counts, r_first = _counts_and_first(r_self)  # (N, B, K, Lr)
    c_vec = c_counts * c_idf  # g_c of the n-gram starting at each position
    r_vec = r_counts * r_idf
    c_norm = jnp.sqrt(jnp.where(c_first, c_vec**2, 0.0).sum(-1))  # (N, B)
    r_norm = jnp.sqrt(jnp.where(r_first, r_vec**2, 0.0).sum(-1))  # (N, B, K)
    # g_r at each candidate n-gram: its count in reference k times its (shared) idf.
    r_at_c = cross.sum(-1) * c_idf[:, :, None]  # (N, B, K, Lc)
    dot = jnp.where(c_first[:, :, None], jnp.minimum(c_vec[:, :, None], r_at_c) * r_at_c, 0.0).sum(-1)
    norms = c_norm[..., None] * r_norm
    similarity = jnp.where(norms != 0, dot / jnp.where(norms != 0, norms, 1.0), dot).mean(axis=0)
    if max_order >= 2:
        delta = (jnp.maximum(c_len - 1, 0)[:, None] - jnp.maximum(r_len - 1, 0)).astype(jnp.float32)
    else:
        delta = jnp.zeros(r_len.shape, jnp.float32)
    penalty = jnp.exp(-(delta**2) / (2 * sigma**2))
    per_reference = similarity * penalty  # (B, K)
    total = jnp.where(has_ref, per_reference, 0.0).sum(axis=1)
    return (10.0 * _safe_div(total, has_ref.sum(axis=1).astype(jnp.float32))).astype(jnp.float32)


# --------------------------------------------------------------------------- METEOR


def meteor(
    candidates: jax.Array,
    references: jax.Array,
    *,
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
    pad_id: int = 0,
) -> jax.Array:
    """METEOR with exact-match alignment only, as nltk's ``meteor_score`` without stems/synonyms.

    Differences from full METEOR: token ids carry no morphology or meaning, so
    only identical words match (no Porter-stem or WordNet-synonym stages, no
    paraphrases, no function-word weighting). The alignment is nltk's greedy
    one, not the chunk-minimising search of the original Java METEOR: scanning
    the candidate right to left, each word takes the right-most still unmatched
    identical reference word. Equivalently the r-th last occurrence of a word in
    the candidate matches its r-th last occurrence in the reference, which is
    computed here in closed form (jit-able, exact).

    With m matches, P = m/|c|, R = m/|r|, F = P R / (α P + (1−α) R), ch the
    number of chunks (runs contiguous in both sentences) and
    score = F (1 − γ (ch/m)^β); the result is the max over present references.

    Args:
      candidates: (B, Lc) integer token ids.
      references: (B, K, Lr) integer token ids; all-pad rows are ignored.
      alpha, beta, gamma: METEOR parameters (nltk defaults).
      pad_id: padding id.

    Returns:
      (B,) float32.
    """
    _check_pair(candidates, references)
    return _meteor(candidates, references, alpha, beta, gamma, pad_id)


@jax.jit
def _meteor(candidates, references, alpha, beta, gamma, pad_id):
    candidates, references = _as_ids(candidates, references)
    c_valid, r_valid = _valid(candidates, pad_id), _valid(references, pad_id)
    c_len, r_len = c_valid.sum(-1), r_valid.sum(-1)
    has_ref = r_len > 0
    c_self = _ngram_equal(candidates, c_valid, candidates, c_valid, 1)[0]
    r_self = _ngram_equal(references, r_valid, references, r_valid, 1)[0]
    cross = _ngram_equal(candidates[:, None], c_valid[:, None], references, r_valid, 1)[0]
    c_size, r_size = candidates.shape[-1], references.shape[-1]
    c_later = jnp.triu(jnp.ones((c_size, c_size), bool), 1)[None]
    r_later = jnp.triu(jnp.ones((r_size, r_size), bool), 1)[None, None]
    c_rank = (c_self & c_later).sum(-1)  # (B, Lc): later occurrences of the same word
    r_rank = (r_self & r_later).sum(-1)  # (B, K, Lr)
    aligned = cross & (c_rank[:, None, :, None] == r_rank[:, :, None, :])  # (B, K, Lc, Lr)
    matched = aligned.any(-1)  # (B, K, Lc); each candidate word has at most one partner
    partner = jnp.where(aligned, jnp.arange(r_size)[None, None, None, :], 0).sum(-1)
    num_matches = matched.sum(-1)
    continued = matched[..., 1:] & matched[..., :-1] & (partner[..., 1:] == partner[..., :-1] + 1)
    chunks = (num_matches - continued.sum(-1)).astype(jnp.float32)

    matches = num_matches.astype(jnp.float32)
    precision = _safe_div(matches, c_len[:, None].astype(jnp.float32))
    recall = _safe_div(matches, r_len.astype(jnp.float32))
    fmean = _safe_div(precision * recall, alpha * precision + (1 - alpha) * recall)
    fragmentation = _safe_div(chunks, matches)
    score = jnp.where(num_matches > 0, fmean * (1 - gamma * fragmentation**beta), 0.0)
    best = jnp.where(has_ref, score, -jnp.inf).max(axis=1)
    return jnp.where(jnp.any(has_ref, axis=1), best, 0.0).astype(jnp.float32)


# --------------------------------------------------------------------------- rewards


def caption_rewards(
    names: Sequence[str], stats: CiderStats | None = None, *, pad_id: int = 0
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Builds a jit-able ``(candidates, references) -> (B, len(names))`` reward-components function.

    Args:
      names: components, in order, from ``"bleu1"``, ``"bleu4"`` (nltk epsilon
        smoothing), ``"rouge"`` (ROUGE-L, β = 1.2), ``"cider"`` (CIDEr-D) and
        ``"meteor"`` (exact matches).
      stats: training document frequencies, required for ``"cider"``.
      pad_id: padding id.

    Returns:
      A function of candidates (B, Lc) and references (B, K, Lr) returning
      (B, len(names)) float32.

    Raises:
      ValueError: on no names, an unknown name (listing the valid ones), or
        ``"cider"`` without stats.
    """
    names = tuple(names)
    if not names:
        raise ValueError(f"Give at least one reward name from {REWARD_NAMES}.")
    unknown = [name for name in names if name not in REWARD_NAMES]
    if unknown:
        raise ValueError(f"Unknown caption reward(s) {unknown}; valid names are {REWARD_NAMES}.")
    if "cider" in names and stats is None:
        raise ValueError("The 'cider' reward needs CiderStats from cider_document_frequencies(train refs).")
    bleu_order = 4 if "bleu4" in names else 1

    def reward_components(candidates: jax.Array, references: jax.Array) -> jax.Array:
        scores = {}
        if "bleu1" in names or "bleu4" in names:
            bleus = bleu(candidates, references, max_order=bleu_order, pad_id=pad_id)
            scores["bleu1"], scores["bleu4"] = bleus[:, 0], bleus[:, -1]
        if "rouge" in names:
            scores["rouge"] = rouge_l(candidates, references, pad_id=pad_id)
        if "cider" in names:
            scores["cider"] = cider_d(candidates, references, stats, pad_id=pad_id)
        if "meteor" in names:
            scores["meteor"] = meteor(candidates, references, pad_id=pad_id)
        return jnp.stack([scores[name] for name in names], axis=-1)

    return reward_components
