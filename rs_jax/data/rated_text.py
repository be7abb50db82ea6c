"""Human-rated sentences of Hutto & Gilbert (ICWSM 2014): text plus mean human sentiment rating.

The ``rs_jax.assets`` asset ``vader`` (from the sdist of ``vaderSentiment==3.3.2``, MIT) holds
four corpora, each sentence rated by about 20 people on −4 (extremely negative) … 4 (extremely
positive) and stored as the raters' mean:

=================  =======  ==========================================================
corpus             texts    source
=================  =======  ==========================================================
``movie_reviews``  10,605   Rotten Tomatoes snippets (Pang & Lee 2005)
``amazon``          3,708   Amazon product-review sentences
``nyt_editorials``  5,190   New York Times opinion-editorial sentences
``tweets``          4,200   tweets
=================  =======  ==========================================================

Each file line is ``id<TAB>mean rating<TAB>text``.

>>> rated = read_rated_texts("movie_reviews")  # doctest: +SKIP
>>> len(rated.texts), rated.ratings.min(), rated.ratings.max()  # doctest: +SKIP
(10605, -3.875, 3.9411764)
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from pathlib import Path

import numpy as np

CORPORA = {
    "movie_reviews": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt_editorials": "nytEditorialSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
}
README = "_README_.txt"


@dataclasses.dataclass(frozen=True)
class RatedTexts:
    """N texts of one corpus with their mean human sentiment rating.

    Attributes:
      ids: the N ids of the file (strings such as ``"1"`` or ``"12_3"``).
      texts: the N texts.
      ratings: (N,) float32 mean rating in [−4, 4].
    """

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    ratings: np.ndarray


def extract_ground_truth(source: Path, target: Path) -> None:
    """``rs_jax.assets`` converter: the rated-text files (and the README) of the inner
    ``hutto_ICWSM_2014.tar.gz`` in ``source`` are written flat into ``target``."""
    wanted = {*CORPORA.values(), README}
    with tarfile.open(Path(source) / "hutto_ICWSM_2014.tar.gz") as archive:
        for member in archive.getmembers():
            if member.isfile() and os.path.basename(member.name) in wanted:
                (Path(target) / os.path.basename(member.name)).write_bytes(archive.extractfile(member).read())
    missing = wanted - {file.name for file in Path(target).iterdir()}
    if missing:
        raise ValueError(f"hutto_ICWSM_2014.tar.gz lacks {sorted(missing)}.")


def parse_rated_lines(text: str, name: str = "<text>") -> RatedTexts:
    """Parses ``id<TAB>rating<TAB>text`` lines (CRLF or LF; blank lines skipped).

    Raises:
      ValueError: naming the line, if one is malformed.
    """
    ids, texts, ratings = [], [], []
    for number, line in enumerate(io.StringIO(text), start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        try:
            rating = float(fields[1])
        except (IndexError, ValueError):
            raise ValueError(
                f"{name}, line {number}: expected id<TAB>rating<TAB>text, got {line[:80]!r}."
            ) from None
        if len(fields) < 3 or not fields[2].strip():
            raise ValueError(f"{name}, line {number}: no text after the rating.")
        ids.append(fields[0])
        texts.append(fields[2].strip())
        ratings.append(rating)
    if not texts:
        raise ValueError(f"{name} holds no rated text.")
    return RatedTexts(tuple(ids), tuple(texts), np.asarray(ratings, np.float32))


def read_rated_texts(corpus: str = "movie_reviews", directory: str | os.PathLike | None = None) -> RatedTexts:
    """The rated texts of one corpus (see the module docstring).

    Args:
      corpus: a key of ``CORPORA``.
      directory: where the files are; None: the ``vader`` asset (fetched on first use).

    Raises:
      ValueError: for an unknown corpus, a missing file or a malformed line.
    """
    if corpus not in CORPORA:
        raise ValueError(f"Unknown rated-text corpus {corpus!r}; known: {sorted(CORPORA)}.")
    if directory is None:
        from rs_jax import assets

        directory = assets.path("vader")
    file = Path(directory) / CORPORA[corpus]
    if not file.is_file():
        raise ValueError(f"{file} does not exist.")
    return parse_rated_lines(file.read_text(encoding="utf-8"), str(file))


def split_indices(
    count: int, seed: int, fractions: tuple[float, float] = (0.8, 0.1)
) -> dict[str, np.ndarray]:
    """A fixed random split of ``count`` items into train / validation / test index arrays.

    Args:
      count: N.
      seed: the numpy ``default_rng`` seed of the permutation.
      fractions: train and validation shares; the test set is the rest.

    Returns:
      ``{"train", "validation", "test"}`` -> sorted int64 indices, disjoint, covering 0..N-1.
    """
    train_share, validation_share = fractions
    if min(fractions) <= 0 or train_share + validation_share >= 1:
        raise ValueError(f"fractions must be positive and sum below 1, got {fractions}.")
    order = np.random.default_rng(seed).permutation(count)
    train_end = round(count * train_share)
    validation_end = train_end + round(count * validation_share)
    return {
        "train": np.sort(order[:train_end]),
        "validation": np.sort(order[train_end:validation_end]),
        "test": np.sort(order[validation_end:]),
    }
