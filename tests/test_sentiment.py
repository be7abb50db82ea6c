"""The sentiment head: ridge fit, the fixed-split recipe, its file, and ``"sentiment"`` in
``text_rewards`` on a tiny BERT encoder built here (no network, no cache)."""

import jax
import numpy as np
import pytest
import transformers

from rs_jax.data import corpus
from rs_jax.data.vocab import PAD_ID, SPECIAL_TOKENS
from rs_jax.rewards import reward_models as rm
from rs_jax.rewards import sentiment

HIDDEN = 16


def test_fit_ridge_recovers_a_noiseless_linear_map():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 5))
    kernel = rng.normal(size=5)
    fit_kernel, fit_bias = sentiment.fit_ridge(features, features @ kernel + 1.5, alpha=1e-9)
    np.testing.assert_allclose(fit_kernel, kernel, atol=1e-6)
    assert fit_bias == pytest.approx(1.5, abs=1e-6)
    shrunk, _ = sentiment.fit_ridge(features, features @ kernel + 1.5, alpha=1e4)
    assert np.linalg.norm(shrunk) < 0.5 * np.linalg.norm(kernel)


def test_train_head_picks_alpha_on_validation_and_reports_test_pearson(tmp_path):
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(400, 8)).astype(np.float32)
    ratings = embeddings @ rng.normal(size=8) + rng.normal(scale=0.5, size=400)
    head = sentiment.train_head(embeddings, ratings, alphas=(0.1, 1e5))
    assert head.recipe["alpha"] == 0.1 and head.recipe["split_sizes"] == {
        "train": 320,
        "validation": 40,
        "test": 40,
    }
    assert head.recipe["test_pearson"] > 0.9
    sentiment.save_head(head, tmp_path / "head.json")
    loaded = sentiment.load_head(tmp_path / "head.json")
    np.testing.assert_array_equal(loaded.kernel, head.kernel)
    assert loaded.bias == head.bias and loaded.recipe == head.recipe
    (tmp_path / "bad.json").write_text('{"bias": 1}')
    with pytest.raises(ValueError, match="not a linear head"):
        sentiment.load_head(tmp_path / "bad.json")


def test_the_shipped_head_reads_minilm_embeddings():
    head = sentiment.load_head()
    assert head.kernel.shape == (384,) and np.isfinite(head.kernel).all()
    assert sum(head.recipe["split_sizes"].values()) == 10605


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> rm.TextModel:
    """A random one-layer BERT whose WordPiece vocabulary is the corpus words."""
    words = [word for word in corpus.corpus_vocabulary().words if word not in SPECIAL_TOKENS]
    vocab_file = tmp_path_factory.mktemp("bert") / "vocab.txt"
    vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab_file))
    config = transformers.BertConfig(
        vocab_size=len(words) + 5,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    with jax.numpy_rank_promotion("allow"):  # module-scoped: runs before the third_party fixture
        model = transformers.FlaxBertModel(config, seed=0)
    return rm.TextModel(
        model=model, params=model.params, tokenizer=tokenizer, directory=str(vocab_file.parent)
    )


@pytest.mark.third_party
@pytest.mark.usefixtures("fast_compile")
def test_sentiment_in_text_rewards_is_the_head_on_the_embedding(encoder):
    sample = corpus.generate_corpus(num_sentences=4, seed=0)
    ids = sample.token_ids(16)
    head = sentiment.LinearHead(np.random.default_rng(2).normal(size=HIDDEN).astype(np.float32), 0.25, {})
    rewards = rm.text_rewards(("positive", "sentiment"), sample.vocab, encoder=encoder, sentiment_head=head)
    values = np.asarray(jax.jit(rewards.apply)(rewards.params, ids))
    texts = [sample.vocab.decode(row[row != PAD_ID]) for row in ids]
    embeddings = rm.encode_texts(encoder, texts)
    np.testing.assert_allclose(values[:, 1], embeddings @ head.kernel + 0.25, atol=1e-5)
    target = rm.encode_texts(encoder, [rm.DESCRIPTIONS["positive"]])[0]
    np.testing.assert_allclose(values[:, 0], embeddings @ target, atol=1e-5)
    wrong = sentiment.LinearHead(np.zeros(HIDDEN + 1, np.float32), 0.0, {})
    with pytest.raises(ValueError, match="reads 17-d embeddings; the encoder gives 16-d"):
        rm.text_rewards(("sentiment",), sample.vocab, encoder=encoder, sentiment_head=wrong)
