"""A generated corpus of short movie-review sentences for pre-training a tiny causal LM.

The text RLHF task needs a pre-trained language model whose samples already mix the
behaviours its two rewards pull apart, and it must not download anything. This module
writes that corpus from a small grammar, deterministically from a seed:

* **positive** opinions: "the acting was truly brilliant and the music made me smile!"
* **negative** opinions: "this film is a waste of time."
* **factual** statements: "the movie runs for 118 minutes and was shot in lisbon."
* **mixed**: a fact and an opinion: "the film was released in 1994, but the plot is dull."
* **contrast**: a positive and a negative opinion: "the cast is superb, but the script is weak."

and with probability ``verbose_prob`` wraps a sentence in filler ("to be honest, i think
that … , if that makes sense."), so lengths vary from 5 to ~40 tokens. Similarity to a
positive-sentiment description and similarity to a factual description (the two default
rewards of ``rs_jax.rewards.reward_models``) therefore disagree across the corpus: the
most positive sentences are opinions with no facts, the most factual ones carry no opinion.

The vocabulary is every word of the grammar (``corpus_vocabulary``), in a fixed order, so
it is the same for every seed and size, and no corpus sentence has an unknown word.

>>> corpus = generate_corpus(num_sentences=4, seed=0)
>>> len(corpus.sentences), corpus.vocab.size == corpus_vocabulary().size
(4, True)
>>> ids = corpus.token_ids(max_length=48)  # (4, 48): <bos> words <eos> <pad>...
>>> prompt_ids, prompt_mask = corpus.prompt_ids()  # left-padded, <bos> first
>>> prompt_ids.shape
(13, 7)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from rs_jax.data.vocab import BOS_ID, PAD_ID, Vocabulary, tokenize

KINDS = ("positive", "negative", "factual", "mixed", "contrast")
DEFAULT_KIND_PROBS = (0.25, 0.2, 0.25, 0.2, 0.1)

# --------------------------------------------------------------------------- lexicons

FILM_SUBJECTS = ("the movie", "the film", "this movie", "this film", "the new film", "the sequel")
# Aspects with their own factual predicates (see _ASPECT_FACTS); all but the director also take
# opinions and serve as prompts.
FACT_ASPECTS = ("the story", "the plot", "the script", "the music", "the cast", "the director")
# Aspects that only take opinions.
OPINION_ASPECTS = ("the acting", "the ending", "the dialogue", "the camera work", "the pacing")

INTENSIFIERS = ("", "", "very", "really", "truly", "quite", "simply", "so")
POSITIVE_ADJECTIVES = (
    "wonderful", "brilliant", "beautiful", "moving", "charming", "delightful", "funny", "clever",
    "gripping", "superb", "warm", "stunning", "excellent", "great", "lovely", "fresh",
)  # fmt: skip
NEGATIVE_ADJECTIVES = (
    "dull", "boring", "awful", "terrible", "weak", "messy", "tedious", "bland", "clumsy",
    "predictable", "silly", "flat", "painful", "lifeless", "poor", "forgettable",
)  # fmt: skip
POSITIVE_NOUNS = ("a joy to watch", "a real treat", "a triumph", "a masterpiece", "a delight", "a gem")
NEGATIVE_NOUNS = ("a mess", "a waste of time", "a letdown", "a disaster", "a chore to watch", "a bore")
POSITIVE_EFFECTS = ("smile", "laugh", "cry with joy", "want more", "love every minute")
NEGATIVE_EFFECTS = ("yawn", "sigh", "leave early", "check my watch", "want my money back")

MINUTES = ("85", "90", "95", "100", "105", "110", "118", "120", "125", "130", "140", "150")
YEARS = ("1968", "1975", "1982", "1989", "1994", "1999", "2003", "2008", "2012", "2017", "2021", "2024")
PLACES = (
    "paris", "rome", "london", "tokyo", "berlin", "chicago", "cairo", "lisbon", "mumbai", "seoul",
    "boston", "madrid",
)  # fmt: skip
NAMES = (
    "anna lee", "tom park", "maria cruz", "john reed", "sara kim", "paul novak", "lena berg",
    "omar haddad",
)  # fmt: skip
SOURCES = ("novel", "true story", "short story", "play", "comic book", "stage musical")
LANGUAGES = ("french", "spanish", "japanese", "korean", "german", "italian", "arabic")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")
BUDGETS = ("five", "ten", "twenty", "forty", "eighty")
ORDINALS = ("first", "second", "third", "fourth")
COUNTS = ("two", "three", "four", "five")
PEOPLE = ("young nurse", "retired teacher", "lonely farmer", "police officer", "jazz singer", "small boy")
RATINGS = ("pg", "r")

OPENING_FILLERS = (
    "to be honest,", "in my humble opinion,", "if you ask me,", "all things considered,",
    "at the end of the day,", "for what it is worth,", "i have to say that", "as far as i can tell,",
    "i think that", "personally, i feel that", "well, you know,", "in a way,",
)  # fmt: skip
CLOSING_FILLERS = (
    ", if that makes sense", ", to be fair", ", i guess", ", more or less", ", as they say",
    ", in the end", ", or so it seems to me", ", for better or worse",
)  # fmt: skip
CONNECTORS = {"same": ("and", ", and", "; also,"), "contrast": (", but", ", while", ", yet", "; however,")}

# Factual predicates: "{slot}" fields are filled from the lexicons of _SLOTS.
FILM_FACTS = (
    "runs for {minutes} minutes", "is {minutes} minutes long", "was released in {year}",
    "was shot in {place}", "is set in {place}", "is based on a {source}", "was directed by {name}",
    "stars {name} and {name}", "is rated {rating}", "is in {language} with subtitles",
    "opens in {place} on {day}", "was made for {budget} million dollars",
    "is the {ordinal} film by {name}",
)  # fmt: skip
_ASPECT_FACTS = {
    "the story": ("takes place in {place}", "follows a {person} in {place}", "is set in {year}"),
    "the plot": ("follows a {person} in {place}", "takes place in {year}", "is based on a {source}"),
    "the script": ("was written by {name}", "is based on a {source}"),
    "the music": ("was written by {name}", "was recorded in {place}"),
    "the cast": ("includes {name} and {name}", "was chosen in {place}"),
    "the director": ("is {name}", "was born in {place}", "made {count} films before this one"),
}
_SLOTS = {
    "minutes": MINUTES, "year": YEARS, "place": PLACES, "source": SOURCES, "name": NAMES,
    "rating": RATINGS, "language": LANGUAGES, "day": DAYS, "budget": BUDGETS, "ordinal": ORDINALS,
    "person": PEOPLE, "count": COUNTS,
}  # fmt: skip
# Opinion predicates: "{adjective}", "{noun}" and "{effect}" come from the sentiment's lexicons.
OPINION_PREDICATES = (
    "is {intensifier} {adjective}", "was {intensifier} {adjective}", "is {adjective} and {adjective}",
    "feels {intensifier} {adjective}", "is {noun}", "made me {effect}",
)  # fmt: skip

_SLOT_PATTERN = re.compile(r"\{\w+\}")

# RL prompts: openings that can go on as an opinion or as a fact.
PROMPT_OPENINGS = (*FILM_SUBJECTS, *FACT_ASPECTS[:-1], "i think that the film", "to be honest, the movie")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A generated corpus.

    Attributes:
      sentences: N sentences (lower case, punctuation attached to the previous word).
      kinds: N kinds, one of ``KINDS`` per sentence.
      prompts: openings for RL (``PROMPT_OPENINGS``): the policy continues them.
      vocab: ``corpus_vocabulary()``.
    """

    sentences: tuple[str, ...]
    kinds: tuple[str, ...]
    prompts: tuple[str, ...]
    vocab: Vocabulary

    def words(self) -> list[list[str]]:
        """The N sentences as word lists (``rs_jax.data.vocab.tokenize``)."""
        return [tokenize(sentence) for sentence in self.sentences]

    def token_ids(self, max_length: int, *, bos: bool = True) -> np.ndarray:
        """(N, max_length) int32 ids for LM pre-training: [<bos>] words <eos> <pad>...

        Sentences longer than ``max_length`` (with <bos> and <eos>) are cut, keeping the <eos>.
        """
        if max_length < 2 + int(bos):
            raise ValueError(f"max_length must be >= {2 + int(bos)}, got {max_length}.")
        ids = self.vocab.encode_batch(self.words(), max_length - int(bos))
        if not bos:
            return ids
        return np.concatenate([np.full((len(ids), 1), BOS_ID, np.int32), ids], axis=1)

    def prompt_ids(self, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded prompts ``<bos> words`` for ``rs_jax.models.causal_lm.generate``.

        Args:
          length: P, the prompt width; None: the longest prompt's.

        Returns:
          ids: (M, length) int32, ``<pad>`` on the left.
          mask: (M, length) int32, 0 on the pads, 1 on ``<bos>`` and the words.

        Raises:
          ValueError: if a prompt does not fit in ``length``.
        """
        rows = [[BOS_ID] + [self.vocab.id(word) for word in tokenize(prompt)] for prompt in self.prompts]
        longest = max(len(row) for row in rows)
        length = longest if length is None else length
        if length < longest:
            raise ValueError(f"length must be >= {longest} (the longest prompt with <bos>), got {length}.")
        ids = np.full((len(rows), length), PAD_ID, np.int32)
        mask = np.zeros((len(rows), length), np.int32)
        for i, row in enumerate(rows):
            ids[i, length - len(row) :] = row
            mask[i, length - len(row) :] = 1
        return ids, mask


def _grammar_texts() -> list[str]:
    """Every literal phrase of the grammar, in a fixed order (the vocabulary's order)."""
    texts = [*FILM_SUBJECTS, *FACT_ASPECTS, *OPINION_ASPECTS, *INTENSIFIERS]
    texts += [*POSITIVE_ADJECTIVES, *NEGATIVE_ADJECTIVES, *POSITIVE_NOUNS, *NEGATIVE_NOUNS]
    texts += [*POSITIVE_EFFECTS, *NEGATIVE_EFFECTS, *OPENING_FILLERS, *CLOSING_FILLERS]
    texts += [connector for group in CONNECTORS.values() for connector in group]
    texts += [*FILM_FACTS, *(fact for facts in _ASPECT_FACTS.values() for fact in facts)]
    texts += [*OPINION_PREDICATES, *(word for words in _SLOTS.values() for word in words)]
    texts += [*PROMPT_OPENINGS, ". !"]
    return texts


def corpus_vocabulary() -> Vocabulary:
    """Every word of the grammar (specials first, then words by first appearance); seed-free."""
    return Vocabulary.from_words(
        word for text in _grammar_texts() for word in tokenize(_SLOT_PATTERN.sub(" ", text))
    )


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _fill(template: str, rng: np.random.Generator, values: dict[str, Sequence[str]]) -> str:
    """Fills each ``{slot}``; a slot used twice ("{name} and {name}") gets two different values."""
    parts = template.split("{")
    out, used = [parts[0]], []
    for part in parts[1:]:
        slot, rest = part.split("}", 1)
        value = _pick(rng, [option for option in values[slot] if option not in used] or values[slot])
        used.append(value)
        out.append(value + rest)
    return " ".join("".join(out).split())


def _opinion(rng: np.random.Generator, positive: bool, subject: str) -> str:
    values = {
        "intensifier": INTENSIFIERS,
        "adjective": POSITIVE_ADJECTIVES if positive else NEGATIVE_ADJECTIVES,
        "noun": POSITIVE_NOUNS if positive else NEGATIVE_NOUNS,
        "effect": POSITIVE_EFFECTS if positive else NEGATIVE_EFFECTS,
    }
    return f"{subject} {_fill(_pick(rng, OPINION_PREDICATES), rng, values)}"


def _fact(rng: np.random.Generator, subject: str) -> str:
    facts = _ASPECT_FACTS.get(subject, FILM_FACTS)
    return f"{subject} {_fill(_pick(rng, facts), rng, _SLOTS)}"


def _subject(rng: np.random.Generator, factual: bool) -> str:
    if factual:
        pool = FILM_SUBJECTS + FACT_ASPECTS if rng.random() < 0.4 else FILM_SUBJECTS
    else:
        pool = FILM_SUBJECTS + FACT_ASPECTS[:-1] + OPINION_ASPECTS
    return _pick(rng, pool)


def _join(rng: np.random.Generator, first: str, second: str, contrast: bool) -> str:
    connector = _pick(rng, CONNECTORS["contrast" if contrast else "same"])
    return f"{first}{connector if connector[0] in ',;' else ' ' + connector} {second}"


def _sentence(rng: np.random.Generator, kind: str, verbose_prob: float) -> str:
    if kind in ("positive", "negative"):
        positive = kind == "positive"
        text = _opinion(rng, positive, _subject(rng, False))
        if rng.random() < 0.4:
            text = _join(rng, text, _opinion(rng, positive, _subject(rng, False)), contrast=False)
    elif kind == "factual":
        text = _fact(rng, _subject(rng, True))
        if rng.random() < 0.4:
            text = _join(rng, text, _fact(rng, _subject(rng, True)), contrast=False)
    elif kind == "mixed":
        positive = rng.random() < 0.5
        clauses = [_fact(rng, _subject(rng, True)), _opinion(rng, positive, _subject(rng, False))]
        if rng.random() < 0.5:
            clauses.reverse()
        text = _join(rng, *clauses, contrast=bool(rng.random() < 0.5))
    elif kind == "contrast":
        positive_first = rng.random() < 0.5
        first = _opinion(rng, positive_first, _subject(rng, False))
        text = _join(rng, first, _opinion(rng, not positive_first, _subject(rng, False)), contrast=True)
    else:
        raise ValueError(f"Unknown sentence kind {kind!r}; known: {KINDS}.")
    if rng.random() < verbose_prob:
        text = f"{_pick(rng, OPENING_FILLERS)} {text}"
        if rng.random() < 0.5:
            text = f"{_pick(rng, OPENING_FILLERS)} {text}"
        if rng.random() < 0.5:
            text += _pick(rng, CLOSING_FILLERS)
    end = "!" if kind == "positive" and rng.random() < 0.3 else "."
    return " ".join(text.split()) + end


def generate_corpus(
    num_sentences: int = 20_000,
    seed: int = 0,
    *,
    kind_probs: Sequence[float] = DEFAULT_KIND_PROBS,
    verbose_prob: float = 0.25,
) -> Corpus:
    """Generates ``num_sentences`` review sentences, deterministically from ``seed``.

    Runs once on the host (numpy); ~20k sentences take well under a second.

    Args:
      num_sentences: N.
      seed: the corpus is a pure function of (seed, num_sentences, kind_probs, verbose_prob).
      kind_probs: probabilities of ``KINDS`` (positive, negative, factual, mixed, contrast).
      verbose_prob: probability of wrapping a sentence in filler words.

    Returns:
      a ``Corpus`` of N sentences, their kinds, the RL prompts and the vocabulary.

    Raises:
      ValueError: on a non-positive size or invalid probabilities.
    """
    if num_sentences < 1:
        raise ValueError(f"num_sentences must be >= 1, got {num_sentences}.")
    probs = np.asarray(kind_probs, np.float64)
    if probs.shape != (len(KINDS),) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
        raise ValueError(
            f"kind_probs must be {len(KINDS)} probabilities of {KINDS} summing to 1, got {kind_probs}."
        )
    if not 0.0 <= verbose_prob <= 1.0:
        raise ValueError(f"verbose_prob must be in [0, 1], got {verbose_prob}.")
    rng = np.random.default_rng(seed)
    kinds = tuple(str(kind) for kind in rng.choice(KINDS, size=num_sentences, p=probs))
    sentences = tuple(_sentence(rng, kind, verbose_prob) for kind in kinds)
    return Corpus(sentences=sentences, kinds=kinds, prompts=PROMPT_OPENINGS, vocab=corpus_vocabulary())
