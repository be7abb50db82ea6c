"""The text bridge (policy tokenizer -> text -> reward tokenizer inside jit/vmap) and the prompts
loader, on a sub-word tokenizer built offline and the packaged MiniLM's tokenizer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.data import prompts as prompts_lib
from rs_jax.rewards import reward_models as rm
from rs_jax.rewards import tokenizer_bridge as tb

SENTENCES = (
    "the film is wonderful and the music made me smile!",
    "the movie runs for 118 minutes and was shot in lisbon.",
    "this film is a waste of time, but the cast is superb.",
    "to be honest, the plot is dull and the ending is silly.",
)


def tiny_tokenizer():
    """A LLaMA-like byte-level BPE tokenizer (``<s>`` prepended, no pad: it pads with ``</s>``),
    trained on a few sentences in well under a second."""
    import tokenizers
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(SENTENCES * 4, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def policy_tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def reward_tokenizer():
    return tb.load_tokenizer(rm.find_minilm())


@pytest.fixture(scope="module")
def sequences(policy_tokenizer):
    """(4, 20) left-padded prompts + responses with EOS and pads after it, and their mask."""
    eos = policy_tokenizer.eos_token_id
    prompt_ids, prompt_mask = prompts_lib.tokenize_prompts(
        [text.split(",")[0][:20] for text in SENTENCES], policy_tokenizer, 8
    )
    responses = [policy_tokenizer(text, add_special_tokens=False)["input_ids"] for text in SENTENCES]
    response_ids = np.full((4, 12), eos, np.int32)
    response_mask = np.zeros((4, 12), np.int32)
    for i, (row, cut) in enumerate(zip(responses, (3, 12, 6, 0))):
        kept = row[:cut] + ([eos] if cut < 12 else [])
        response_ids[i, : len(kept)] = kept[:12]
        response_mask[i, : len(kept)] = 1
    response_ids[0, 6] = 7  # a token after EOS, outside the mask: must not be decoded
    return np.concatenate([prompt_ids, response_ids], 1), np.concatenate([prompt_mask, response_mask], 1)


# --------------------------------------------------------------------------- prompts


def test_read_prompts_jsonl_text_and_errors(tmp_path):
    jsonl = tmp_path / "prompts.jsonl"
    records = [{"prompt": "I loved it", "text": "ignored"}, {"text": " A review "}, {"label": 1, "text": ""}]
    jsonl.write_text("\n".join(json.dumps(record) for record in records) + "\n\n")
    assert prompts_lib.read_prompts(jsonl) == ["I loved it", "A review"]
    plain = tmp_path / "prompts.txt"
    plain.write_text("first line\n\n  second line \n")
    assert prompts_lib.read_prompts(plain) == ["first line", "second line"]
    errors = {
        "missing.jsonl": (None, "does not exist"),
        "empty.txt": ("\n \n", "holds no prompt"),
        "broken.jsonl": ('{"prompt": "ok"}\n{"prompt": \n', "line 2: not valid JSON"),
        "field.jsonl": (
            '{"review": "no prompt field"}\n',
            r"line 1: expected a JSON object.*'prompt' or 'text'",
        ),
        "type.jsonl": ('["a list"]\n', "line 1: expected a JSON object"),
    }
    for name, (content, message) in errors.items():
        if content is not None:
            (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=message):
            prompts_lib.read_prompts(tmp_path / name)


@pytest.mark.third_party
def test_tokenize_prompts_left_pads_and_keeps_the_beginning(policy_tokenizer):
    texts = ["the film", SENTENCES[1]]
    ids, mask = prompts_lib.tokenize_prompts(texts, policy_tokenizer, 6)
    assert ids.shape == mask.shape == (2, 6) and ids.dtype == np.int32
    assert mask[:, -1].all() and (np.diff(mask, axis=1) >= 0).all()  # left-padded
    short = policy_tokenizer(texts[0])["input_ids"]
    assert ids[0, 6 - len(short) :].tolist() == short and mask[0].sum() == len(short)
    assert (ids[0, : 6 - len(short)] == policy_tokenizer.eos_token_id).all()  # no pad token: EOS
    assert ids[1].tolist() == policy_tokenizer(texts[1])["input_ids"][:6]  # <s> and the first words
    assert ids[1, 0] == policy_tokenizer.bos_token_id
    with pytest.raises(ValueError, match="non-empty"):
        prompts_lib.tokenize_prompts([], policy_tokenizer, 6)
    with pytest.raises(ValueError, match=">= 1"):
        prompts_lib.tokenize_prompts(texts, policy_tokenizer, 0)


# --------------------------------------------------------------------------- the bridge


@pytest.mark.third_party
def test_bridge_equals_host_decode_then_encode(policy_tokenizer, reward_tokenizer, sequences):
    ids, mask = sequences
    bridge = tb.build_text_bridge(policy_tokenizer, reward_tokenizer, max_length=10)
    input_ids, attention_mask = jax.jit(bridge.inputs)(ids, mask)
    assert input_ids.shape == attention_mask.shape == (4, 10) and input_ids.dtype == jnp.int32
    texts = [
        policy_tokenizer.decode(row[keep.astype(bool)], skip_special_tokens=True)
        for row, keep in zip(ids, mask)
    ]
    assert texts[0].startswith("the film is wonder") and "<s>" not in texts[0] and "</s>" not in texts[0]
    expected = reward_tokenizer(texts, truncation=True, max_length=10, padding="max_length")
    np.testing.assert_array_equal(input_ids, expected["input_ids"])
    np.testing.assert_array_equal(attention_mask, expected["attention_mask"])
    # Rows longer than T are cut keeping [SEP], as HF truncation=True does.
    lengths = np.array([len(row) for row in reward_tokenizer(texts)["input_ids"]])
    assert lengths.max() > 10 > lengths.min()
    np.testing.assert_array_equal(attention_mask.sum(1), np.minimum(lengths, 10))
    assert (input_ids[lengths > 10, -1] == reward_tokenizer.sep_token_id).all()


@pytest.mark.third_party
def test_bridge_under_vmap_and_jit(policy_tokenizer, reward_tokenizer, sequences):
    """One callback serves a vmapped batch (M runs × B samples) and a vmap inside jit."""
    ids, mask = sequences
    bridge = tb.build_text_bridge(policy_tokenizer, reward_tokenizer, max_length=24)
    stacked_ids = np.stack([ids, ids[::-1]])
    stacked_mask = np.stack([mask, mask[::-1]])
    batched = jax.jit(jax.vmap(bridge.inputs))(stacked_ids, stacked_mask)
    for index in range(2):
        single = tb.retokenize_host(bridge, stacked_ids[index], stacked_mask[index])
        for got, want in zip(batched, single):
            np.testing.assert_array_equal(got[index], want)
    # Unbatched mask with batched ids, and the bridge inside a scan.
    shared = jax.vmap(bridge.inputs, in_axes=(0, None))(stacked_ids, mask)
    np.testing.assert_array_equal(shared[0][0], batched[0][0])

    def body(carry, row_ids):
        input_ids, attention_mask = bridge.inputs(row_ids, mask)
        return carry + attention_mask.sum(), input_ids

    total, scanned = jax.jit(lambda xs: jax.lax.scan(body, jnp.int32(0), xs))(stacked_ids)
    np.testing.assert_array_equal(scanned, shared[0])
    assert int(total) == int(shared[1].sum())


@pytest.mark.third_party
def test_bridge_user_errors(policy_tokenizer, reward_tokenizer):
    with pytest.raises(ValueError, match="transformers tokenizer"):
        tb.build_text_bridge(object(), reward_tokenizer)
    with pytest.raises(ValueError, match="room for one token"):
        tb.build_text_bridge(policy_tokenizer, reward_tokenizer, max_length=2)
    bridge = tb.build_text_bridge(policy_tokenizer, reward_tokenizer)
    with pytest.raises(ValueError, match=r"\(B, L\) integer"):
        bridge.inputs(jnp.zeros((2, 3), jnp.float32))
    with pytest.raises(ValueError, match="shape of token_ids"):
        bridge.inputs(jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="Vocabulary or a transformers tokenizer"):
        rm.make_bridge("not a tokenizer", reward_tokenizer)
    with pytest.raises(ValueError, match="word-level policy Vocabulary"):
        rm.text_rewards(("lexicon:great",), policy_tokenizer)


@pytest.mark.third_party
@pytest.mark.usefixtures("fast_compile")
def test_text_rewards_of_a_tokenizer_policy_equal_the_host_path(policy_tokenizer, sequences):
    """The MiniLM rewards through the bridge = host encode_texts of the decoded texts."""
    encoder = rm.load_encoder()
    ids, mask = sequences
    rewards = rm.text_rewards(("positive", "concise"), policy_tokenizer, encoder=encoder, max_length=32)
    got = np.asarray(jax.jit(rewards.apply)(rewards.params, ids, mask))
    texts = tb.decode_texts(policy_tokenizer, ids, mask)
    target = rm.encode_texts(encoder, [rm.DESCRIPTIONS["positive"]])[0]
    np.testing.assert_allclose(got[:, 0], rm.encode_texts(encoder, texts, max_length=32) @ target, atol=1e-5)
    special = np.isin(ids, policy_tokenizer.all_special_ids)
    np.testing.assert_allclose(got[:, 1], -((mask == 1) & ~special).sum(1) / ids.shape[1], rtol=1e-6)
