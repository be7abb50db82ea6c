"""The generated review corpus: deterministic, fully covered by its vocabulary, varied."""

import collections

import numpy as np
import pytest

from rs_jax.data import corpus
from rs_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID


@pytest.fixture(scope="module")
def sample() -> corpus.Corpus:
    return corpus.generate_corpus(num_sentences=3000, seed=0)


def test_same_seed_same_corpus_other_seed_other_corpus(sample):
    again = corpus.generate_corpus(num_sentences=3000, seed=0)
    assert again.sentences == sample.sentences and again.kinds == sample.kinds
    assert corpus.generate_corpus(num_sentences=3000, seed=1).sentences != sample.sentences
    # A prefix of a larger corpus is not promised, but the vocabulary never depends on the sample.
    assert corpus.generate_corpus(num_sentences=5, seed=7).vocab == sample.vocab


def test_vocabulary_covers_every_sentence_and_every_word_is_used(sample):
    ids = sample.token_ids(max_length=64)
    assert not np.any(ids == UNK_ID)
    assert np.all(ids[:, 0] == BOS_ID)
    assert np.all((ids == EOS_ID).sum(axis=1) == 1), "no sentence is cut at 64 tokens"
    used = {word for words in sample.words() for word in words}
    assert set(sample.vocab.words[4:]) - used == set()
    assert sample.vocab.decode(ids[0]) == sample.sentences[0]


def test_kinds_lengths_and_fillers_vary(sample):
    counts = collections.Counter(sample.kinds)
    assert set(counts) == set(corpus.KINDS)
    for kind, prob in zip(corpus.KINDS, corpus.DEFAULT_KIND_PROBS):
        assert abs(counts[kind] / len(sample.kinds) - prob) < 0.03
    lengths = np.array([len(words) for words in sample.words()])
    assert lengths.min() <= 6 and lengths.max() >= 30
    verbose = [s for s in sample.sentences if any(s.startswith(f) for f in corpus.OPENING_FILLERS)]
    assert 0.15 < len(verbose) / len(sample.sentences) < 0.35
    assert all(s.endswith((".", "!")) for s in sample.sentences)


def test_kinds_use_their_lexicons(sample):
    positive, negative = set(corpus.POSITIVE_ADJECTIVES), set(corpus.NEGATIVE_ADJECTIVES)
    for kind, words in zip(sample.kinds, sample.words()):
        if kind == "positive":
            assert not negative & set(words)
        if kind == "negative":
            assert not positive & set(words)
        if kind == "factual":
            assert not (positive | negative) & set(words)


def test_prompts_are_left_padded_with_bos(sample):
    ids, mask = sample.prompt_ids(length=8)
    assert ids.shape == mask.shape == (len(sample.prompts), 8)
    first = mask.argmax(axis=1)
    assert np.all(ids[np.arange(len(ids)), first] == BOS_ID)
    assert np.all(ids[mask == 0] == PAD_ID) and np.all(mask[:, -1] == 1)
    assert [sample.vocab.decode(row[m == 1]) for row, m in zip(ids, mask)] == list(sample.prompts)
    with pytest.raises(ValueError, match="longest prompt"):
        sample.prompt_ids(length=3)


def test_token_ids_without_bos_and_cut_keeps_eos(sample):
    ids = sample.token_ids(max_length=5, bos=False)
    assert ids.shape == (len(sample.sentences), 5) and np.all(ids[:, -1] == EOS_ID)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_sentences": 0}, "num_sentences"),
        ({"kind_probs": (1.0, 0.0)}, "kind_probs"),
        ({"kind_probs": (0.5, 0.5, 0.5, 0.0, 0.0)}, "kind_probs"),
        ({"verbose_prob": 1.5}, "verbose_prob"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        corpus.generate_corpus(**kwargs)
