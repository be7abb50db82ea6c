"""A learned sentiment reward: a ridge head on MiniLM sentence embeddings, fit to human ratings.

The head maps the all-MiniLM-L6-v2 embedding (mean-pooled, L2-normalized, 384-d; the
``minilm`` asset) of a text to the mean human sentiment rating (−4 … 4) of Hutto & Gilbert's
movie-review snippets (``rs_jax.data.rated_text``, the ``vader`` asset). It is fit in closed
form (ridge regression on centred embeddings, float64), so the recipe is deterministic:

* split the 10,605 snippets once with ``split_indices(N, seed=0)``: 80 % train, 10 %
  validation, 10 % test;
* pick the ridge strength among ``ALPHAS`` by validation Pearson correlation;
* report the Pearson correlation on the test snippets, which the fit never saw.

The fitted head (385 numbers) ships as ``heads/sentiment_minilm.json`` with its recipe and
scores: ridge strength 3.0, Pearson correlation with the human ratings 0.682 on the 1,060
validation snippets and 0.684 on the 1,061 test snippets. ``python -m rs_jax.rewards.sentiment``
re-fits it from the assets and rewrites the file; it embeds every snippet once with the MiniLM
(951 s on the shared 2-core CPU, load average ~16, jax 0.9.2), which is why the head ships
rather than being fit on first use.

``reward_models.text_rewards(("sentiment", …), policy)`` scores policy ids with it: the head
reads the same pooled embedding as the description rewards, in one encoder pass.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HEAD_FILE = Path(__file__).parent / "heads" / "sentiment_minilm.json"
ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class LinearHead:
    """``rating ≈ embedding @ kernel + bias``.

    Attributes:
      kernel: (D,) float32.
      bias: the intercept.
      recipe: how it was fit and what it scored (JSON-able).
    """

    kernel: np.ndarray
    bias: float
    recipe: dict[str, Any]


def fit_ridge(features: np.ndarray, targets: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge regression with an unpenalized intercept, closed form in float64.

    Args:
      features: (N, D).
      targets: (N,).
      alpha: L2 penalty on the kernel.

    Returns:
      (kernel (D,) float32, bias).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean()
    centred = x - x_mean
    kernel = np.linalg.solve(centred.T @ centred + alpha * np.eye(x.shape[1]), centred.T @ (y - y_mean))
    return kernel.astype(np.float32), float(y_mean - x_mean @ kernel)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (N,) arrays."""
    return float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1])


def train_head(
    embeddings: np.ndarray,
    ratings: np.ndarray,
    *,
    seed: int = SPLIT_SEED,
    alphas: Sequence[float] = ALPHAS,
) -> LinearHead:
    """Fits the ridge head on the train split, choosing alpha on validation (see the module docstring).

    Args:
      embeddings: (N, D) sentence embeddings.
      ratings: (N,) human ratings.
      seed: the split seed (``rated_text.split_indices``).
      alphas: candidate ridge strengths.

    Returns:
      the head fit on the train split, its recipe holding the chosen alpha and the validation
      and test Pearson correlations.
    """
    from rs_jax.data.rated_text import split_indices

    split = split_indices(len(ratings), seed)
    fits = {alpha: fit_ridge(embeddings[split["train"]], ratings[split["train"]], alpha) for alpha in alphas}

    def score(fit: tuple[np.ndarray, float], part: str) -> float:
        kernel, bias = fit
        return pearson(embeddings[split[part]] @ kernel + bias, ratings[split[part]])

    alpha = max(alphas, key=lambda alpha: score(fits[alpha], "validation"))
    kernel, bias = fits[alpha]
    recipe = {
        "split_seed": seed,
        "split_sizes": {part: len(indices) for part, indices in split.items()},
        "alpha": alpha,
        "validation_pearson": round(score(fits[alpha], "validation"), 4),
        "test_pearson": round(score(fits[alpha], "test"), 4),
    }
    return LinearHead(kernel, bias, recipe)


def save_head(head: LinearHead, file: str | os.PathLike = HEAD_FILE) -> None:
    """Writes a head as JSON (kernel as a list of floats)."""
    payload = {"recipe": head.recipe, "bias": head.bias, "kernel": [float(value) for value in head.kernel]}
    Path(file).write_text(json.dumps(payload, indent=1) + "\n")


def load_head(file: str | os.PathLike = HEAD_FILE) -> LinearHead:
    """Reads a head written by ``save_head``.

    Raises:
      ValueError: naming the file, if it is missing or malformed.
    """
    from rs_jax.data.files import read_json

    payload = read_json(file)
    try:
        return LinearHead(
            np.asarray(payload["kernel"], np.float32), float(payload["bias"]), payload["recipe"]
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{file}: not a linear head ({error}).") from error


def embed_corpus(encoder: Any, texts: Sequence[str], *, batch: int = 64, max_length: int = 128) -> np.ndarray:
    """(N, D) MiniLM embeddings of many texts, encoded in length-sorted batches (host side)."""
    from rs_jax.rewards.reward_models import encode_texts

    order = np.argsort([len(text) for text in texts], kind="stable")
    embeddings = np.zeros((len(texts), encoder.model.config.hidden_size), np.float32)
    for start in range(0, len(texts), batch):
        chosen = order[start : start + batch]
        embeddings[chosen] = encode_texts(encoder, [texts[i] for i in chosen], max_length=max_length)
    return embeddings


def main() -> None:
    """Re-fits ``heads/sentiment_minilm.json`` from the ``vader`` and ``minilm`` assets."""
    from rs_jax import assets
    from rs_jax.data.rated_text import read_rated_texts
    from rs_jax.rewards.reward_models import load_encoder

    rated = read_rated_texts("movie_reviews")
    encoder = load_encoder()
    start = time.perf_counter()
    embeddings = embed_corpus(encoder, rated.texts)
    seconds = time.perf_counter() - start
    head = train_head(embeddings, rated.ratings)
    head.recipe.update(
        data=f"{assets.get_asset('vader').requirement}: movie_reviews ({len(rated.texts)} snippets)",
        encoder=f"{assets.get_asset('minilm').requirement} (mean-pooled, L2-normalized, max 128 tokens)",
        command="python -m rs_jax.rewards.sentiment",
    )
    save_head(head)
    print(json.dumps(head.recipe, indent=1))
    print(f"embedded {len(rated.texts)} snippets in {seconds:.0f} s; wrote {HEAD_FILE}")


if __name__ == "__main__":
    main()
