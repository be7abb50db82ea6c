"""A learned toxicity classifier in JAX: the Jigsaw BiLSTM of ``toxic-comment-classifier`` (MIT).

The ``rs_jax.assets`` asset ``toxicity`` holds the Keras model's weights (``model.weights.h5``,
read with h5py) and its Keras tokenizer's word index (converted once to JSON by a restricted
unpickler that builds no class but plain dicts). The model, as the package builds it:

    words → ids (Keras ``Tokenizer``: lower-case, the filter characters become spaces, split on
    spaces, words ranked ≥ 20,000 or unknown dropped) → the last 100 ids, zero-padded on the left
    → Embedding(20000, 50) → Bidirectional(LSTM(50), concat) over all 100 steps
    → max over time → Dense(50, relu) → Dense(6, sigmoid)

Labels (Jigsaw's): toxic, severe_toxic, obscene, threat, insult, identity_hate. The reward is
harmlessness = 1 − p(toxic) ∈ [0, 1].

Policy ids reach it through ``rs_jax.rewards.tokenizer_bridge``'s text bridge (decode on the
host, then ``KerasWordTokenizer.encode_padded``), so the reward stays jit-able.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pickle
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MAX_WORDS = 100
WEIGHTS = "model.weights.h5"
WORD_INDEX = "keras_tokenizer.json"
KERAS_TOKENIZER = ("keras.src.legacy.preprocessing.text", "Tokenizer")

PyTree = Any


# --------------------------------------------------------------------------- tokenizer


class _KerasTokenizerState:
    """Receives the pickled Keras ``Tokenizer``'s ``__dict__`` (``BUILD`` sets it); no methods."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only the Keras tokenizer stand-in and plain containers; any other class is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == KERAS_TOKENIZER:
            return _KerasTokenizerState
        if module == "collections" and name in ("OrderedDict", "defaultdict"):
            return getattr(collections, name)
        if module == "builtins" and name in ("int", "list", "dict"):
            return {"int": int, "list": list, "dict": dict}[name]
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a Keras tokenizer pickle")


def read_keras_tokenizer_pickle(file: str | os.PathLike) -> dict[str, Any]:
    """The settings and word index of a pickled Keras ``Tokenizer``, without Keras.

    Returns:
      ``{"filters", "lower", "split", "num_words", "oov_token", "word_index"}``; ``word_index``
      keeps only the words the tokenizer emits (rank < ``num_words``).

    Raises:
      ValueError: if the pickle holds anything but a Keras tokenizer of plain containers.
    """
    try:
        with open(file, "rb") as handle:
            state = _RestrictedUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, AttributeError) as error:
        raise ValueError(f"{file} is not a pickled Keras tokenizer ({error}).") from error
    if not isinstance(state, _KerasTokenizerState):
        raise ValueError(f"{file} does not hold a Keras Tokenizer.")
    settings = vars(state)
    if settings.get("char_level") or settings.get("analyzer") is not None:
        raise ValueError(f"{file}: character-level or custom-analyzer Keras tokenizers are not supported.")
    limit = settings.get("num_words") or float("inf")
    return {
        "filters": settings["filters"],
        "lower": bool(settings["lower"]),
        "split": settings["split"],
        "num_words": settings.get("num_words"),
        "oov_token": settings.get("oov_token"),
        "word_index": {word: int(i) for word, i in settings["word_index"].items() if i < limit},
    }


@dataclasses.dataclass(frozen=True, eq=False)
class KerasWordTokenizer:
    """Keras ``Tokenizer.texts_to_sequences`` + ``pad_sequences(maxlen)`` on the host.

    Attributes:
      word_index: word -> id (1-based; only ids the model knows).
      filters: characters replaced by ``split`` before splitting.
      lower: lower-case first.
      split: the separator.
      oov_id: id of the out-of-vocabulary token, or None (unknown words are dropped).
    """

    word_index: Mapping[str, int]
    filters: str
    lower: bool
    split: str
    oov_id: int | None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> KerasWordTokenizer:
        """From ``read_keras_tokenizer_pickle``'s dict (or its JSON)."""
        word_index = dict(settings["word_index"])
        oov = settings.get("oov_token")
        return cls(word_index, settings["filters"], settings["lower"], settings["split"], word_index.get(oov))

    def words(self, text: str) -> list[str]:
        """Keras ``text_to_word_sequence``."""
        text = text.lower() if self.lower else text
        text = text.translate(str.maketrans(dict.fromkeys(self.filters, self.split)))
        return [word for word in text.split(self.split) if word]

    def ids(self, text: str) -> list[int]:
        """Keras ``texts_to_sequences`` of one text."""
        ids = (self.word_index.get(word, self.oov_id) for word in self.words(text))
        return [i for i in ids if i is not None]

    def encode_padded(
        self, texts: Sequence[str], max_length: int = MAX_WORDS
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) int32 ids, each text's **last** T ids zero-padded on the left (Keras
        ``pad_sequences`` defaults), and the (N, T) int32 mask of real ids.

        The interface of ``tokenizer_bridge.encode_padded``, so a ``TextBridge`` can target it.
        """
        ids = np.zeros((len(texts), max_length), np.int32)
        for row, text in enumerate(texts):
            sequence = self.ids(text)[-max_length:]
            if sequence:
                ids[row, max_length - len(sequence) :] = sequence
        return ids, (ids != 0).astype(np.int32)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """No special tokens (the interface ``tokenizer_bridge.build_text_bridge`` checks)."""
        del pair
        return 0


# --------------------------------------------------------------------------- asset


def convert_keras_files(source: Path, target: Path) -> None:
    """``rs_jax.assets`` converter: copies the .h5 weights, writes the tokenizer pickle as JSON."""
    shutil.copyfile(Path(source) / WEIGHTS, Path(target) / WEIGHTS)
    settings = read_keras_tokenizer_pickle(Path(source) / "tokenizer.pickle")
    (Path(target) / WORD_INDEX).write_text(json.dumps(settings))


def read_keras_weights(file: str | os.PathLike) -> PyTree:
    """The BiLSTM's params from a Keras 3 ``model.weights.h5`` (h5py, no Keras).

    Returns:
      ``{"embedding": (V, E), "forward"/"backward": {"kernel": (E, 4U), "recurrent": (U, 4U),
      "bias": (4U,)}, "hidden": {"kernel", "bias"}, "output": {"kernel", "bias"}}`` float32,
      LSTM gates in Keras order (input, forget, cell, output).

    Raises:
      ValueError: if a weight is missing.
    """
    import h5py

    def lstm(group: Any) -> dict[str, np.ndarray]:
        return {
            name: np.asarray(group[f"cell/vars/{i}"], np.float32)
            for i, name in enumerate(("kernel", "recurrent", "bias"))
        }

    def dense(group: Any) -> dict[str, np.ndarray]:
        return {
            "kernel": np.asarray(group["vars/0"], np.float32),
            "bias": np.asarray(group["vars/1"], np.float32),
        }

    try:
        with h5py.File(file, "r") as weights:
            layers = weights["layers"]
            return {
                "embedding": np.asarray(layers["embedding/vars/0"], np.float32),
                "forward": lstm(layers["bidirectional/forward_layer"]),
                "backward": lstm(layers["bidirectional/backward_layer"]),
                "hidden": dense(layers["dense"]),
                "output": dense(layers["dense_1"]),
            }
    except (KeyError, OSError) as error:
        raise ValueError(f"{file} is not the toxicity BiLSTM's Keras weights ({error}).") from error


@dataclasses.dataclass(frozen=True, eq=False)
class ToxicityModel:
    """The BiLSTM's params (``read_keras_weights``) and its word tokenizer."""

    params: PyTree
    tokenizer: KerasWordTokenizer


def load_toxicity_model(directory: str | os.PathLike | None = None) -> ToxicityModel:
    """Loads the classifier from a directory with ``model.weights.h5`` and ``keras_tokenizer.json``.

    Args:
      directory: None: the ``toxicity`` asset (fetched on first use).
    """
    if directory is None:
        from rs_jax import assets

        directory = assets.path("toxicity")
    directory = Path(directory)
    settings = json.loads((directory / WORD_INDEX).read_text())
    params = jax.tree.map(jnp.asarray, read_keras_weights(directory / WEIGHTS))
    return ToxicityModel(params, KerasWordTokenizer.from_settings(settings))


# --------------------------------------------------------------------------- model


def _lstm(params: Mapping[str, jax.Array], inputs: jax.Array) -> jax.Array:
    """Keras LSTM (sigmoid gates, tanh cell) over (B, T, E) -> (B, T, U) hidden states."""
    units = params["recurrent"].shape[0]
    projected = inputs @ params["kernel"] + params["bias"][None, None, :]  # (B, T, 4U)
    zeros = jnp.zeros((inputs.shape[0], units), inputs.dtype)

    def step(carry: tuple[jax.Array, jax.Array], gates_in: jax.Array):
        hidden, cell = carry
        gates = gates_in + hidden @ params["recurrent"]
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
        hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
        return (hidden, cell), hidden

    _, hidden = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(projected, 0, 1))
    return jnp.swapaxes(hidden, 0, 1)


def toxicity_probabilities(params: PyTree, word_ids: jax.Array) -> jax.Array:
    """(B, T) Keras word ids (left-padded with 0) -> (B, 6) sigmoid probabilities of ``LABELS``.

    Like Keras, every one of the T steps runs (the pads too: the model has no mask).
    """
    word_ids = jnp.asarray(word_ids)
    if word_ids.ndim != 2 or not jnp.issubdtype(word_ids.dtype, jnp.integer):
        raise ValueError(
            f"word_ids must be (B, T) integer ids, got shape {word_ids.shape}, dtype {word_ids.dtype}."
        )
    embedded = jnp.take(params["embedding"], word_ids, axis=0, mode="clip")
    forward = _lstm(params["forward"], embedded)
    backward = _lstm(params["backward"], embedded[:, ::-1])
    pooled = jnp.concatenate([forward.max(axis=1), backward.max(axis=1)], axis=-1)
    hidden = jax.nn.relu(pooled @ params["hidden"]["kernel"] + params["hidden"]["bias"][None, :])
    return jax.nn.sigmoid(hidden @ params["output"]["kernel"] + params["output"]["bias"][None, :])


def harmlessness(params: PyTree, word_ids: jax.Array) -> jax.Array:
    """(B, T) Keras word ids -> (B,) float32 1 − p(toxic)."""
    return 1.0 - toxicity_probabilities(params, word_ids)[:, LABELS.index("toxic")]
