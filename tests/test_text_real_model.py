"""tasks.text on a pre-trained LM of a local HF directory (``--set model=… prompts=…``): a tiny
LLaMA saved with its own sub-word tokenizer, prompted from a JSONL file, scored by the MiniLM
through the text bridge."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from test_tokenizer_bridge import SENTENCES, tiny_tokenizer

from configs import text as text_config
from rs_jax.models import causal_lm, hf
from tasks import text

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, third_party_module) -> str:
    """A tiny random LLaMA (PyTorch-free Flax weights) with a byte-level BPE tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = tiny_tokenizer()
    model, params = causal_lm.tiny_llama(
        len(tokenizer),
        jax.random.key(0),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=32,
        max_position_embeddings=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    hf.save_flax_pretrained(model, params, directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"text": sentence[:24]}) for sentence in SENTENCES) + "\n")
    return str(path)


def test_smoke_run_on_a_local_model_and_prompts_file(tmp_path, model_dir, prompts_file):
    run_dir = tmp_path / "run"
    text.main(
        ["--preset", "smoke", "--out", str(run_dir), "--set", f"model={model_dir}", f"prompts={prompts_file}"]
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["reward_names"] == ["positive", "concise"]
    assert len(results["rs"]) == text_config.get_config("smoke").rs_points
    assert "RS with LoRA factors averaged" in results["extra_soups"]
    assert not (run_dir / "pretrain").exists()  # the loaded model is the base: no pre-training
    samples = json.loads((run_dir / "samples.json").read_text())["samples"]
    assert {"init", "λ=0", "λ=1"} <= set(samples)
    # Prompts decoded with the model's own tokenizer: the file's texts, no special tokens.
    first = samples["init"][0].split(" | ")[0]
    assert SENTENCES[0].startswith(first) and first and "<s>" not in first


def test_model_needs_prompts_and_a_model_directory(tmp_path, model_dir, prompts_file):
    with pytest.raises(ValueError, match="needs --set prompts"):
        text.build(text_config.TextConfig(model=model_dir))
    with pytest.raises(ValueError, match="not a Hugging Face model directory"):
        text.build(text_config.TextConfig(model=str(tmp_path / "missing"), prompts=prompts_file))
    with pytest.raises(ValueError, match="needs --set model"):
        text.build(text_config.TextConfig(prompts=prompts_file))
    with pytest.raises(ValueError, match="does not exist"):
        text.build(text_config.TextConfig(model=model_dir, prompts=str(tmp_path / "none.jsonl")))


CHAT_TEMPLATE = "{% for message in messages %}Q: {{ message['content'] }}\n{% endfor %}A:"


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory, model_dir) -> str:
    """The tiny LLaMA with a chat template on its tokenizer."""
    import shutil

    directory = tmp_path_factory.mktemp("tiny_chat_llama")
    shutil.copytree(model_dir, directory, dirs_exist_ok=True)
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return str(directory)


def test_movie_review_prompts_skip_the_chat_header_and_hold_out_evaluation_snippets(chat_model_dir):
    from rs_jax.data import rated_text

    config = text_config.TextConfig(
        model=chat_model_dir, prompts=text.MOVIE_REVIEWS, prompt_count=6, eval_prompts=4, prompt_length=120
    )
    policy = text.loaded_policy(config)
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    header = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Generate a movie review."}], tokenize=False, add_generation_prompt=True
    )
    assert policy.header_length == len(tokenizer(header)["input_ids"])
    beginnings = {" ".join(text_.split()[:4]) for text_ in rated_text.read_rated_texts("movie_reviews").texts}
    decoded = {}
    for name, (ids, mask) in (("train", policy.prompts), ("eval", policy.eval_prompts)):
        full = policy.decode(np.asarray(ids), np.asarray(mask))
        content = policy.decode(np.asarray(ids), np.asarray(text.content_mask(mask, policy.header_length)))
        assert all(line.startswith("Q: Generate a movie review.") for line in full)
        assert set(content) <= beginnings, content
        decoded[name] = content
    assert len(decoded["train"]) == 6 and len(decoded["eval"]) == 4
    assert not set(decoded["train"]) & set(decoded["eval"])  # evaluation snippets are held out
    with pytest.raises(ValueError, match="raise prompt_length"):
        text.loaded_policy(dataclasses.replace(config, prompt_length=20))


def test_content_mask_switches_off_the_header_after_the_left_padding():
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], np.int32)
    np.testing.assert_array_equal(text.content_mask(mask, 2), [[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]])
    np.testing.assert_array_equal(text.content_mask(mask, 0), mask)
