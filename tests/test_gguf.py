"""GGUF → HF LLaMA conversion on a tiny GGUF file written here with the ``gguf`` package."""

import gguf
import jax
import numpy as np
import pytest
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

from rs_jax.models import causal_lm
from rs_jax.models import gguf as gguf_lib
from rs_jax.rewards import tokenizer_bridge

HIDDEN, LAYERS, HEADS, KV_HEADS = 32, 2, 4, 2
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|extra|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ m", "o v", "i e", "ov ie", "Ġm ovie"]
TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_permute_rows_by_hand_and_round_trip():
    rows = np.arange(8.0)[:, None] * np.ones((1, 3))  # one head of 2·d = 8 rows: halves 0-3, 4-7
    np.testing.assert_array_equal(gguf_lib.permute_rows(rows, 1)[:, 0], [0, 4, 1, 5, 2, 6, 3, 7])
    weights = np.random.default_rng(0).normal(size=(HEADS * 8, 5))
    np.testing.assert_array_equal(
        gguf_lib.unpermute_rows(gguf_lib.permute_rows(weights, HEADS), HEADS), weights
    )
    with pytest.raises(ValueError, match="heads of even size"):
        gguf_lib.unpermute_rows(np.zeros((6, 2)), 2)


def tokens() -> list[str]:
    """Control tokens, the 256 byte symbols, then one token per merge."""
    merged = ["".join(merge.split(" ")) for merge in MERGES]
    return CONTROL + sorted(set(bytes_to_unicode().values())) + merged


def torch_state(params) -> dict[str, np.ndarray]:
    """A Flax LLaMA's params under transformers' PyTorch names, (out, in) weights."""
    flat = {"/".join(path): np.asarray(leaf) for path, leaf in _flatten(params)}
    state = {"model.embed_tokens.weight": flat["model/embed_tokens/embedding"]}
    state["model.norm.weight"] = flat["model/norm/weight"]
    for name, value in flat.items():
        if name.startswith("model/layers/"):
            key = name.replace("/", ".")
            state[key.replace(".kernel", ".weight")] = value.T if name.endswith("kernel") else value
    return state


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def write_gguf(path, state: dict[str, np.ndarray]) -> None:
    """Writes a llama GGUF: the embedding as Q8_0, the rest F32, q/k rows permuted, no output.weight."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(64)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(50000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    vocabulary = tokens()
    writer.add_token_list(vocabulary)
    writer.add_token_types([3] * len(CONTROL) + [1] * (len(vocabulary) - len(CONTROL)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_chat_template(TEMPLATE)
    inverse = {value: key for key, value in gguf_lib.GLOBAL_NAMES.items()}
    block_inverse = {value: key for key, value in gguf_lib.BLOCK_NAMES.items()}
    for name, value in state.items():
        if name in inverse:
            gguf_name = inverse[name]
        else:
            _, _, block, rest = name.split(".", 3)
            gguf_name = f"blk.{block}.{block_inverse[rest]}"
        if gguf_name.endswith("attn_q.weight"):
            value = gguf_lib.permute_rows(value, HEADS)
        elif gguf_name.endswith("attn_k.weight"):
            value = gguf_lib.permute_rows(value, KV_HEADS)
        value = np.ascontiguousarray(value, np.float32)
        if gguf_name == "token_embd.weight":
            quantized = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(
                gguf_name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0
            )
        else:
            writer.add_tensor(gguf_name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(reference model, its params with the tied Q8_0-rounded embedding, converted directory)."""
    vocab_size = len(tokens())
    with jax.numpy_rank_promotion("allow"):  # module-scoped: runs before the third_party fixture
        model, params = causal_lm.tiny_llama(
            vocab_size,
            jax.random.key(0),
            hidden_size=HIDDEN,
            num_layers=LAYERS,
            num_heads=HEADS,
            num_kv_heads=KV_HEADS,
            rope_theta=50000.0,
            rms_norm_eps=1e-5,
        )
    params = jax.tree.map(np.asarray, params)
    # The file stores the embedding as Q8_0 and no output.weight (tied, as SmolLM2): the
    # reference uses the Q8_0-rounded embedding for both.
    embedding = params["model"]["embed_tokens"]["embedding"]
    rounded = gguf.quants.dequantize(
        gguf.quants.quantize(embedding, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    )
    params["model"]["embed_tokens"]["embedding"] = rounded
    params["lm_head"]["kernel"] = rounded.T
    directory = tmp_path_factory.mktemp("gguf")
    write_gguf(directory / "tiny.gguf", torch_state(params))
    gguf_lib.convert_gguf_directory(directory, directory / "hf")
    return model, params, directory / "hf"


@pytest.mark.third_party
@pytest.mark.usefixtures("fast_compile")
def test_converted_directory_gives_the_reference_logits(converted):
    model, params, directory = converted
    loaded, loaded_params = causal_lm.load_causal_lm(directory)
    config = loaded.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.rope_theta) == (
        HEADS,
        KV_HEADS,
        50000.0,
    )
    assert (config.rms_norm_eps, config.max_position_embeddings, config.vocab_size) == (
        1e-5,
        128,
        len(tokens()),
    )
    ids = np.random.default_rng(1).integers(0, config.vocab_size, (2, 7))
    expected = model(ids, params=params).logits
    np.testing.assert_allclose(loaded(ids, params=loaded_params).logits, expected, atol=1e-5, rtol=1e-5)


def test_converted_tokenizer_is_byte_level_bpe_with_the_chat_template(converted):
    tokenizer = tokenizer_bridge.load_tokenizer(converted[2])
    vocabulary = tokens()
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
        "<|endoftext|>",
    )
    assert sorted(tokenizer.all_special_ids) == [0, 1, 2, 3]
    ids = tokenizer("the movie 42")["input_ids"]
    assert [vocabulary[i] for i in ids] == ["t", "he", "Ġmovie", "Ġ", "4", "2"]  # digits split one by one
    assert tokenizer.decode(ids) == "the movie 42"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert tokenizer.decode(chat) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert chat[0] == 1 and chat.count(2) == 1


def test_bad_files_raise(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        gguf_lib.read_gguf(tmp_path / "broken.gguf")
    with pytest.raises(ValueError, match=r"holds 0 \.gguf files"):
        gguf_lib.convert_gguf_directory(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="Only GGUF architecture 'llama'"):
        gguf_lib.llama_config({"general.architecture": "gpt2"})
