"""Caption metrics on token ids against independent implementations on word strings.

nltk (BLEU, METEOR), rouge-score (ROUGE-L, β = 1) and pycocoevalcap's pure-Python
scorers (ROUGE-L β = 1.2, CIDEr-D) score the same fixtures after mapping ids to
words; agreement to 1e-4.
"""

import collections
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nltk.stem import porter
from nltk.translate import bleu_score, meteor_score
from pycocoevalcap.cider import cider_scorer
from pycocoevalcap.rouge import rouge
from rouge_score import rouge_scorer

from rs_jax.rewards import text_metrics as tm

WORDS = ("cat", "dog", "red", "blue", "tree", "sky", "ball", "man", "car", "sun", "box", "cup")
PAD = 0  # ids 1..len(WORDS) are words
ATOL = 1e-4
BATCH, NUM_REFS, CAND_LEN, REF_LEN = 40, 4, 10, 12


def _sentence(rng: np.random.Generator, length: int, phrases: list[np.ndarray]) -> np.ndarray:
    """Words drawn mostly from a small phrase bank, so n-grams repeat within and across sentences."""
    out: list[int] = []
    while len(out) < length:
        if rng.random() < 0.7:
            out.extend(phrases[rng.integers(len(phrases))].tolist())
        else:
            out.append(int(rng.integers(1, len(WORDS) + 1)))
    return np.asarray(out[:length], np.int32)


def _perturb(rng: np.random.Generator, sentence: np.ndarray) -> np.ndarray:
    words = sentence.tolist()
    for _ in range(rng.integers(1, 4)):
        action = rng.integers(3)
        if action == 0 and words:
            words.pop(rng.integers(len(words)))
        elif action == 1 and len(words) > 1:
            i = rng.integers(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words.insert(rng.integers(len(words) + 1), int(rng.integers(1, len(WORDS) + 1)))
    return np.asarray(words, np.int32)


def make_fixture(seed: int, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(B, CAND_LEN) candidates and (B, NUM_REFS, REF_LEN) references, pad-filled.

    Every item has at least one reference; missing references are all-pad rows
    anywhere among the K; candidates include empty, one-word, exact copies and
    perturbed copies of a reference.
    """
    rng = np.random.default_rng(seed)
    phrases = [rng.integers(1, len(WORDS) + 1, size=rng.integers(1, 4)) for _ in range(6)]
    candidates = np.zeros((batch, CAND_LEN), np.int32)
    references = np.zeros((batch, NUM_REFS, REF_LEN), np.int32)
    for b in range(batch):
        present = rng.permutation(NUM_REFS)[: rng.integers(1, NUM_REFS + 1)]
        for k in present:
            ref = _sentence(rng, int(rng.integers(1, REF_LEN + 1)), phrases)
            references[b, k, : len(ref)] = ref
        source = references[b, present[0]]
        source = source[source != PAD]
        kind = b % 8
        if kind == 0:
            cand = np.zeros(0, np.int32)
        elif kind == 1:
            cand = np.asarray([rng.integers(1, len(WORDS) + 1)], np.int32)
        elif kind == 2:
            cand = source
        elif kind in (3, 4, 5):
            cand = _perturb(rng, source)
        else:
            cand = _sentence(rng, int(rng.integers(2, CAND_LEN + 1)), phrases)
        cand = cand[:CAND_LEN]
        candidates[b, : len(cand)] = cand
    return candidates, references


def words(ids: np.ndarray) -> list[str]:
    out = []
    for token in ids.tolist():
        if token == PAD:
            break
        out.append(WORDS[token - 1])
    return out


def present_refs(refs: np.ndarray) -> list[list[str]]:
    return [words(ref) for ref in refs if ref[0] != PAD]


@pytest.fixture(scope="module")
def fixture() -> tuple[np.ndarray, np.ndarray]:
    return make_fixture(0)


# --------------------------------------------------------------------------- against references


@pytest.mark.parametrize(("smoothing", "method"), [("epsilon", 1), ("add1", 2), ("none", 0)])
def test_bleu_matches_nltk(fixture, smoothing, method):
    candidates, references = fixture
    smoother = getattr(bleu_score.SmoothingFunction(), f"method{method}")
    weights = [(1.0,), (1 / 2,) * 2, (1 / 3,) * 3, (1 / 4,) * 4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # method0 warns about zero counts
        expected = np.asarray(
            [
                bleu_score.sentence_bleu(present_refs(r), words(c), weights, smoothing_function=smoother)
                for c, r in zip(candidates, references)
            ]
        )
    got = tm.bleu(candidates, references, smoothing=smoothing)
    assert got.shape == (BATCH, 4) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=ATOL)
    assert 0 < expected[:, 3].mean() < 1  # the fixture exercises partial 4-gram overlap


def test_rouge_l_matches_pycocoevalcap(fixture):
    candidates, references = fixture
    scorer = rouge.Rouge()
    expected = [
        scorer.calc_score([" ".join(words(c))], [" ".join(r) for r in present_refs(refs)])
        for c, refs in zip(candidates, references)
    ]
    got = tm.rouge_l(candidates, references)
    assert got.shape == (BATCH,)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=ATOL)


def test_rouge_l_beta_one_matches_rouge_score(fixture):
    candidates, references = fixture
    first = np.argmax(references[:, :, 0] != PAD, axis=1)
    single = np.zeros_like(references)  # only reference k = 0, the first present one
    single[:, 0] = references[np.arange(BATCH), first]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = [
        scorer.score(" ".join(words(r[0])), " ".join(words(c)))["rougeL"].fmeasure
        for c, r in zip(candidates, single)
    ]
    got = tm.rouge_l(candidates, single, beta=1.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=ATOL)


def _pycoco_cider(candidates, references, document_frequency=None):
    scorer = cider_scorer.CiderScorer(n=4, sigma=6.0)
    for c, refs in zip(candidates, references):
        scorer += (" ".join(words(c)), [" ".join(r) for r in present_refs(refs)])
    if document_frequency is None:
        return scorer.compute_score()[1], scorer
    scorer.document_frequency = document_frequency
    return np.asarray(scorer.compute_cider()), scorer


def test_cider_d_matches_pycocoevalcap(fixture):
    candidates, references = fixture
    expected, scorer = _pycoco_cider(candidates, references)
    stats = tm.cider_document_frequencies(references)
    got = tm.cider_d(candidates, references, stats)
    assert got.shape == (BATCH,)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=ATOL)
    assert expected.max() > 1.0

    # The table holds exactly pycocoevalcap's document frequencies.
    table = {
        tuple(WORDS[t - 1] for t in row[1 : 1 + row[0]]): df
        for row, df in zip(np.asarray(stats.ngrams).tolist(), np.asarray(stats.document_frequency))
        if df > 0  # not a filler row
    }
    assert table == {gram: df for gram, df in scorer.document_frequency.items() if df > 0}
    assert float(stats.log_num_ref_sets) == pytest.approx(np.log(BATCH))


def test_cider_d_with_training_document_frequencies(fixture):
    """idf from another ("training") set of references, as self-critical training uses it."""
    candidates, references = fixture
    _, train_refs = make_fixture(1)  # same number of sets, so pycocoevalcap's log N agrees
    train = cider_scorer.CiderScorer(n=4)
    for refs in train_refs:
        train += (None, [" ".join(r) for r in present_refs(refs)])
    train.compute_doc_freq()
    expected, _ = _pycoco_cider(candidates, references, train.document_frequency)
    got = tm.cider_d(candidates, references, tm.cider_document_frequencies(train_refs))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=ATOL)


class _NoSynonyms:
    """WordNet stand-in for nltk's METEOR: no synsets, so only exact (and stem) matches."""

    @staticmethod
    def synsets(word):
        del word
        return []


def test_meteor_matches_nltk_exact_matching(fixture):
    stemmer = porter.PorterStemmer()
    # Distinct lower-case words with distinct stems: nltk's stem stage cannot add matches.
    assert len({stemmer.stem(w) for w in WORDS}) == len(WORDS)
    assert all(w == w.lower() for w in WORDS)
    candidates, references = fixture
    expected = [
        meteor_score.meteor_score(present_refs(refs), words(c), stemmer=stemmer, wordnet=_NoSynonyms())
        for c, refs in zip(candidates, references)
    ]
    got = tm.meteor(candidates, references)
    assert got.shape == (BATCH,)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=ATOL)


def in_fixture_shape(candidate: list[int], refs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """One hand-made example as row 0 of a fixture-shaped batch (reuses the compiled programs)."""
    candidates = np.zeros((BATCH, CAND_LEN), np.int32)
    references = np.zeros((BATCH, NUM_REFS, REF_LEN), np.int32)
    candidates[0, : len(candidate)] = candidate
    for k, ref in enumerate(refs):
        references[0, k, : len(ref)] = ref
    return candidates, references


def test_meteor_greedy_alignment_hand_case():
    """nltk's right-to-left greedy alignment, checked by hand: cand a b a, ref a a b.

    The last 'a' (cand 2) takes the last 'a' (ref 1), 'b' pairs 1↔2, the first 'a' pairs 0↔0:
    matches (0,0) (1,2) (2,1) -> 3 chunks; P = R = 1, F = 1, score = 1 - 0.5·(3/3)^3 = 0.5.
    """
    got = tm.meteor(*in_fixture_shape([1, 2, 1], [[1, 1, 2]]))
    np.testing.assert_allclose(np.asarray(got)[0], 0.5, atol=1e-6)


def test_short_static_lengths(fixture):
    """Arrays shorter than the n-gram order (L = 2 < 4) score as the same sentences padded longer."""
    candidates, references = fixture
    short = candidates[:, :2]
    padded = np.zeros_like(candidates)
    padded[:, :2] = short
    np.testing.assert_allclose(
        np.asarray(tm.bleu(short, references)), np.asarray(tm.bleu(padded, references)), rtol=0, atol=1e-6
    )


def test_identical_caption_scores_one():
    candidates, references = in_fixture_shape([3, 4, 5, 6], [[], [3, 4, 5, 6]])
    np.testing.assert_allclose(np.asarray(tm.bleu(candidates, references))[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(tm.rouge_l(candidates, references))[0], 1.0, atol=1e-6)
    # One chunk of 4 matches: 1 - 0.5 (1/4)^3.
    np.testing.assert_allclose(np.asarray(tm.meteor(candidates, references))[0], 1 - 0.5 / 64, atol=1e-6)


# --------------------------------------------------------------------------- jit, padding & ids

NAMES = ("cider", "bleu4", "rouge", "meteor", "bleu1")
TRACES: collections.Counter = collections.Counter()


@jax.jit
def all_rewards(candidates, references, stats, pad_id):
    """The reward function as a training step uses it: inside one jit. Counts its traces."""
    TRACES["all_rewards"] += 1
    return tm.caption_rewards(NAMES, stats, pad_id=pad_id)(candidates, references)


def test_caption_rewards_jit_does_not_recompile(fixture):
    candidates, references = fixture
    stats = tm.cider_document_frequencies(references)
    first = all_rewards(candidates, references, stats, PAD)
    second = all_rewards(candidates[::-1].copy(), references[::-1].copy(), stats, PAD)
    assert TRACES["all_rewards"] == 1
    assert first.shape == (BATCH, len(NAMES)) and first.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(second), np.asarray(first)[::-1], rtol=0, atol=1e-6)
    columns = {
        "bleu1": tm.bleu(candidates, references)[:, 0],
        "bleu4": tm.bleu(candidates, references)[:, 3],
        "rouge": tm.rouge_l(candidates, references),
        "cider": tm.cider_d(candidates, references, stats),
        "meteor": tm.meteor(candidates, references),
    }
    expected = np.stack([np.asarray(columns[name]) for name in NAMES], axis=1)
    np.testing.assert_allclose(np.asarray(first), expected, rtol=0, atol=1e-5)


def test_padding_and_missing_references_are_ignored(fixture):
    candidates, references = fixture
    stats = tm.cider_document_frequencies(references)
    base = np.asarray(all_rewards(candidates, references, stats, PAD))
    rng = np.random.default_rng(2)

    # Tokens after the first pad are ignored (the first pad stays in place).
    def scribble(tokens):
        noisy = tokens.copy()
        after_first_pad = np.cumsum(tokens == PAD, axis=-1) > 1
        noisy[after_first_pad] = rng.integers(1, len(WORDS) + 1, size=int(after_first_pad.sum()))
        return noisy

    noisy = all_rewards(scribble(candidates), scribble(references), stats, PAD)
    np.testing.assert_allclose(np.asarray(noisy), base, rtol=0, atol=1e-6)
    # The order of the K rows, missing ones included, changes nothing.
    reordered = all_rewards(candidates, references[:, ::-1].copy(), stats, PAD)
    np.testing.assert_allclose(np.asarray(reordered), base, rtol=0, atol=1e-6)
    # A candidate without any reference scores 0.
    np.testing.assert_array_equal(
        np.asarray(all_rewards(candidates, np.zeros_like(references), stats, PAD)), 0.0
    )


def test_pad_id_and_large_ids_are_exact(fixture):
    """Remapping ids (pad = 7, words spread over the whole int32 range) leaves every score unchanged."""
    candidates, references = fixture
    base = np.asarray(all_rewards(candidates, references, tm.cider_document_frequencies(references), PAD))
    rng = np.random.default_rng(3)
    spread = rng.choice(np.arange(8, 2**31 - 1, 9973), size=len(WORDS), replace=False)
    lut = np.concatenate([[7], spread]).astype(np.int32)
    cands, refs = lut[candidates], lut[references]
    stats = tm.cider_document_frequencies(refs, pad_id=7)
    np.testing.assert_allclose(np.asarray(all_rewards(cands, refs, stats, 7)), base, rtol=0, atol=1e-5)


def test_bad_inputs_raise_value_error(fixture):
    candidates, references = fixture
    stats = tm.cider_document_frequencies(references)
    metrics = [tm.bleu, tm.rouge_l, tm.meteor, lambda c, r: tm.cider_d(c, r, stats)]
    bad_pairs = [
        (candidates[0], references),  # candidates not (B, L)
        (candidates, references[:, 0]),  # references not (B, K, L)
        (candidates[:3], references),  # batch sizes differ
        (candidates.astype(np.float32), references),  # not token ids
    ]
    for metric in metrics:
        for c, r in bad_pairs:
            with pytest.raises(ValueError):
                metric(c, r)
    with pytest.raises(ValueError, match="smoothing"):
        tm.bleu(candidates, references, smoothing="exp")
    with pytest.raises(ValueError, match="bleu1"):
        tm.caption_rewards(["bleu2"])
    with pytest.raises(ValueError, match="CiderStats"):
        tm.caption_rewards(["cider"])
    with pytest.raises(ValueError):
        tm.cider_document_frequencies(np.zeros((2, 3, 4), np.int32))  # nothing but padding
    with pytest.raises(ValueError):
        tm.cider_document_frequencies(references[0])
