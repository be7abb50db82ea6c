"""The toxicity BiLSTM in JAX against a NumPy loop, on tiny Keras-layout weights written here;
the Keras tokenizer's rules; the restricted unpickler; ``"harmless"`` in ``text_rewards``."""

import json
import pickle
import sys
import types

import h5py
import jax
import numpy as np
import pytest
from test_tokenizer_bridge import SENTENCES, tiny_tokenizer

from rs_jax.data import corpus
from rs_jax.rewards import reward_models as rm
from rs_jax.rewards import tokenizer_bridge as tb
from rs_jax.rewards import toxicity

VOCAB, EMBED, UNITS, STEPS = 12, 4, 3, 6
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'  # Keras Tokenizer's default
WORDS = {"the": 1, "film": 2, "is": 3, "dull": 4, "and": 5, "silly": 6, "music": 7, "made": 8, "me": 9}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Random weights in the Keras 3 ``model.weights.h5`` layout, and a word index."""
    rng = np.random.default_rng(0)
    directory = tmp_path_factory.mktemp("toxicity")
    with h5py.File(directory / toxicity.WEIGHTS, "w") as weights:
        weights["layers/embedding/vars/0"] = rng.normal(size=(VOCAB, EMBED)).astype(np.float32)
        for side in ("forward", "backward"):
            for i, shape in enumerate(((EMBED, 4 * UNITS), (UNITS, 4 * UNITS), (4 * UNITS,))):
                weights[f"layers/bidirectional/{side}_layer/cell/vars/{i}"] = rng.normal(size=shape).astype(
                    np.float32
                )
        for name, shape in (("dense", (2 * UNITS, 5)), ("dense_1", (5, 6))):
            weights[f"layers/{name}/vars/0"] = rng.normal(size=shape).astype(np.float32)
            weights[f"layers/{name}/vars/1"] = rng.normal(size=shape[1:]).astype(np.float32)
    settings = {
        "filters": KERAS_FILTERS,
        "lower": True,
        "split": " ",
        "num_words": 10,
        "oov_token": None,
    }
    (directory / toxicity.WORD_INDEX).write_text(json.dumps({**settings, "word_index": WORDS}))
    return directory


def numpy_probabilities(params, ids: np.ndarray) -> np.ndarray:
    """The Keras model written out step by step."""

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    def lstm(p, inputs):
        hidden, cell, outputs = np.zeros(UNITS), np.zeros(UNITS), []
        for x in inputs:
            z = x @ p["kernel"] + hidden @ p["recurrent"] + p["bias"]
            i, f, g, o = z[:UNITS], z[UNITS : 2 * UNITS], z[2 * UNITS : 3 * UNITS], z[3 * UNITS :]
            cell = sigmoid(f) * cell + sigmoid(i) * np.tanh(g)
            hidden = sigmoid(o) * np.tanh(cell)
            outputs.append(hidden)
        return np.array(outputs)

    rows = []
    for row in ids:
        embedded = np.asarray(params["embedding"])[row]
        forward, backward = lstm(params["forward"], embedded), lstm(params["backward"], embedded[::-1])
        pooled = np.concatenate([forward.max(0), backward.max(0)])
        hidden = np.maximum(pooled @ params["hidden"]["kernel"] + params["hidden"]["bias"], 0)
        rows.append(sigmoid(hidden @ params["output"]["kernel"] + params["output"]["bias"]))
    return np.array(rows)


def test_keras_word_tokenizer_rules(model_dir):
    tokenizer = toxicity.load_toxicity_model(model_dir).tokenizer
    assert tokenizer.words("The film, is DULL!\tand\nsilly") == ["the", "film", "is", "dull", "and", "silly"]
    # "me" has rank 9 < num_words 10; unknown words are dropped, not mapped to an id.
    ids, mask = tokenizer.encode_padded(["the unknown film made me", "", "the film is dull and silly"], 4)
    np.testing.assert_array_equal(ids, [[1, 2, 8, 9], [0, 0, 0, 0], [3, 4, 5, 6]])  # left pads, last 4 ids
    np.testing.assert_array_equal(mask, ids != 0)


def test_bilstm_equals_the_numpy_loop_and_jits(model_dir):
    model = toxicity.load_toxicity_model(model_dir)
    ids = np.random.default_rng(1).integers(0, VOCAB, (3, STEPS)).astype(np.int32)
    ids[0, :2] = 0  # left pads run through the LSTM too, as in Keras
    expected = numpy_probabilities(jax.tree.map(np.asarray, model.params), ids)
    probabilities = jax.jit(toxicity.toxicity_probabilities)(model.params, ids)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        toxicity.harmlessness(model.params, ids), 1 - expected[:, 0], rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="word_ids must be"):
        toxicity.toxicity_probabilities(model.params, ids[0])


def test_restricted_unpickler_reads_a_keras_tokenizer_and_refuses_other_classes(tmp_path, monkeypatch):
    module_name, class_name = toxicity.KERAS_TOKENIZER
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
    keras_class = type(class_name, (), {"__module__": module_name, "__qualname__": class_name})
    monkeypatch.setattr(sys.modules[module_name], class_name, keras_class, raising=False)
    keras_tokenizer = keras_class()
    keras_tokenizer.__dict__.update(
        filters="!,", lower=True, split=" ", num_words=3, oov_token=None, char_level=False, analyzer=None
    )
    keras_tokenizer.word_index = {"the": 1, "film": 2, "dull": 3}
    (tmp_path / "tokenizer.pickle").write_bytes(pickle.dumps(keras_tokenizer))
    settings = toxicity.read_keras_tokenizer_pickle(tmp_path / "tokenizer.pickle")
    assert settings["word_index"] == {"the": 1, "film": 2} and settings["num_words"] == 3

    (tmp_path / "evil.pickle").write_bytes(pickle.dumps(print))
    with pytest.raises(ValueError, match=r"refusing builtins\.print"):
        toxicity.read_keras_tokenizer_pickle(tmp_path / "evil.pickle")


@pytest.mark.usefixtures("fast_compile")
def test_harmless_in_text_rewards_equals_the_host_path(model_dir):
    policy = tiny_tokenizer()
    model = toxicity.load_toxicity_model(model_dir)
    rewards = rm.text_rewards(("harmless", "concise"), policy, toxicity_model=model)
    rows = [policy(text)["input_ids"] for text in SENTENCES]
    ids = np.full((len(rows), max(map(len, rows))), policy.eos_token_id, np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    values = np.asarray(jax.jit(rewards.apply)(rewards.params, ids))
    texts = tb.decode_texts(policy, ids)
    word_ids, _ = model.tokenizer.encode_padded(texts, toxicity.MAX_WORDS)
    np.testing.assert_allclose(values[:, 0], toxicity.harmlessness(model.params, word_ids), rtol=1e-6)
    with pytest.raises(ValueError, match="needs an HF tokenizer policy"):
        rm.text_rewards(("harmless",), corpus.corpus_vocabulary(), toxicity_model=model)
