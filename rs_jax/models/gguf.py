"""GGUF (llama.cpp) LLaMA checkpoints → Hugging Face LLaMA directories, without torch.

``convert_gguf`` reads a GGUF file with the ``gguf`` package, dequantizes every tensor to
float32 (Q4_1, Q8_0, … all through ``gguf.quants.dequantize``), renames the tensors to
transformers' PyTorch names, undoes llama.cpp's row permutation of the query and key
projections (``unpermute_rows``), writes the tied embedding out as ``lm_head.weight`` too
(transformers' Flax LLaMA has no tied head, so the directory is written untied), and writes::

    config.json              LlamaConfig from the GGUF metadata (layers, width, heads, KV heads,
                             FFN width, context length, rope theta, RMS-norm epsilon, vocab)
    model.safetensors        float32, PyTorch names
    tokenizer.json, tokenizer_config.json, special_tokens_map.json
                             a byte-level BPE ``tokenizers`` tokenizer built from the metadata's
                             vocabulary, merges and token types, with its chat template

The directory loads with ``rs_jax.models.causal_lm.load_causal_lm`` and
``rs_jax.rewards.tokenizer_bridge.load_tokenizer``. transformers 4.57 can read GGUF itself
(``from_pretrained(gguf_file=…)``), but only with torch installed.

Measured on SmolLM2-135M-Instruct (``rs_jax.assets`` asset ``smollm2``, Q4_1 with a Q8_0
embedding; 2-core CPU, jax 0.9.2, transformers 4.57.6): see ``benchmarks/smollm2.py``.

>>> convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_hf")  # doctest: +SKIP
>>> model, params = causal_lm.load_causal_lm("smollm2_hf")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# GGUF tensor name (per block: "blk.{i}." + key) -> transformers LLaMA PyTorch name.
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# llama.cpp's pre-tokenizer names whose split rule is GPT-2's regex, with single digits split
# first ("smollm", "starcoder", …) or not ("gpt2"); llama-vocab.cpp groups them this way.
DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "codeshell")
PLAIN_PRE = ("gpt2", "default")


def permute_rows(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's ``permute`` of a q/k projection (``convert_hf_to_gguf.py``), on (out, in) rows.

    Within each head's ``2·d`` rows, HF's rotary layout (first halves, then second halves) is
    interleaved into GGUF's pairs: row ``h·2d + 2i + j`` of the result is row ``h·2d + j·d + i``.

    Args:
      weights: (num_heads·2d, …) PyTorch-layout weight.
      num_heads: query heads for q, key-value heads for k.
    """
    rows = weights.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(f"{rows} rows do not split into {num_heads} heads of even size.")
    return (
        weights.reshape(num_heads, 2, rows // num_heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def unpermute_rows(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """The inverse of ``permute_rows``: GGUF q/k rows back to transformers' layout."""
    rows = weights.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(f"{rows} rows do not split into {num_heads} heads of even size.")
    return (
        weights.reshape(num_heads, rows // num_heads // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def read_gguf(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, tensors) of a GGUF file, every tensor dequantized to float32.

    Returns:
      metadata: key -> value (strings, numbers, lists), e.g. ``"llama.block_count": 30``.
      tensors: GGUF name -> float32 array in numpy (row-major, PyTorch) layout.

    Raises:
      ValueError: if the file is missing or not GGUF.
    """
    import gguf

    path = os.fspath(path)
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable GGUF file ({error}).") from error
    metadata = {
        name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")
    }
    tensors = {
        tensor.name: np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
        for tensor in reader.tensors
    }
    return metadata, tensors


def _float32_value(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (GGUF stores 1e-5 as 9.9999997e-06)."""
    return float(np.format_float_positional(np.float32(value), unique=True))


def llama_config(metadata: Mapping[str, Any]) -> Any:
    """The ``transformers.LlamaConfig`` of GGUF metadata (architecture ``llama``), written untied.

    Raises:
      ValueError: for another architecture, rope scaling, or missing keys.
    """
    import transformers

    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"Only GGUF architecture 'llama' converts to LlamaConfig, got {arch!r}.")
    if any(key.startswith("llama.rope.scaling") for key in metadata):
        raise ValueError("GGUF rope scaling is not converted; this file sets llama.rope.scaling.*.")

    def get(key: str) -> Any:
        if f"llama.{key}" not in metadata:
            raise ValueError(f"GGUF metadata lacks llama.{key}.")
        return metadata[f"llama.{key}"]

    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    vocab = metadata.get("llama.vocab_size", len(metadata.get("tokenizer.ggml.tokens", ())))
    token_id = {
        name: int(metadata[f"tokenizer.ggml.{name}_token_id"])
        for name in ("bos", "eos", "pad")
        if f"tokenizer.ggml.{name}_token_id" in metadata
    }
    return transformers.LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(metadata.get("llama.attention.head_count_kv", heads)),
        head_dim=int(metadata.get("llama.rope.dimension_count", hidden // heads)),
        max_position_embeddings=int(get("context_length")),
        rms_norm_eps=_float32_value(get("attention.layer_norm_rms_epsilon")),
        rope_theta=_float32_value(metadata.get("llama.rope.freq_base", 10000.0)),
        tie_word_embeddings=False,
        bos_token_id=token_id.get("bos"),
        eos_token_id=token_id.get("eos"),
        pad_token_id=token_id.get("pad"),
        architectures=["LlamaForCausalLM"],
        torch_dtype="float32",
    )


def hf_state_dict(tensors: Mapping[str, np.ndarray], config: Any) -> dict[str, np.ndarray]:
    """GGUF tensors -> transformers LLaMA PyTorch names, q/k rows un-permuted, head untied.

    Raises:
      ValueError: on a tensor name this converter does not know.
    """
    state = {}
    for name, value in tensors.items():
        if name in GLOBAL_NAMES:
            state[GLOBAL_NAMES[name]] = value
            continue
        block, _, rest = name.partition(".")[2].partition(".")
        if not name.startswith("blk.") or rest not in BLOCK_NAMES:
            raise ValueError(f"Unknown GGUF tensor {name!r} for a LLaMA model.")
        if rest == "attn_q.weight":
            value = unpermute_rows(value, config.num_attention_heads)
        elif rest == "attn_k.weight":
            value = unpermute_rows(value, config.num_key_value_heads)
        state[f"model.layers.{block}.{BLOCK_NAMES[rest]}"] = value
    state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    return {name: np.ascontiguousarray(value) for name, value in state.items()}


def build_tokenizer(metadata: Mapping[str, Any]) -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` from GGUF tokenizer metadata (byte-level BPE).

    Control tokens (token type 3) become special tokens; BOS/EOS/UNK/PAD come from the
    ``tokenizer.ggml.*_token_id`` keys, the chat template from ``tokenizer.chat_template``.

    Raises:
      ValueError: for a tokenizer model other than ``gpt2`` or an unknown pre-tokenizer.
    """
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind, pre = metadata.get("tokenizer.ggml.model"), metadata.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in DIGIT_SPLIT_PRE + PLAIN_PRE:
        raise ValueError(
            f"Only byte-level BPE GGUF tokenizers (model 'gpt2', pre-tokenizer among "
            f"{DIGIT_SPLIT_PRE + PLAIN_PRE}) are converted, got model {kind!r}, pre {pre!r}."
        )
    tokens = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", ())]
    types = list(metadata.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    backend = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if pre in DIGIT_SPLIT_PRE
        else byte_level
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [token for token, kind in zip(tokens, types) if kind == 3]
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in control])

    def token(name: str) -> str | None:
        key = f"tokenizer.ggml.{name}_token_id"
        return tokens[int(metadata[key])] if key in metadata else None

    named = {
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
    }
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **named,
        additional_special_tokens=[token for token in control if token not in named.values()],
        chat_template=metadata.get("tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )


def convert_gguf(gguf_path: str | os.PathLike, directory: str | os.PathLike) -> None:
    """Writes the HF LLaMA directory of a GGUF file (see the module docstring).

    Raises:
      ValueError: for a file that is not a GGUF LLaMA with a byte-level BPE tokenizer.
    """
    from safetensors.numpy import save_file

    metadata, tensors = read_gguf(gguf_path)
    config = llama_config(metadata)
    state = hf_state_dict(tensors, config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer(metadata).save_pretrained(directory)
    config.save_pretrained(directory)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "gguf_metadata.json").write_text(
        json.dumps({key: value for key, value in metadata.items() if not key.startswith("tokenizer.ggml.")})
    )


def convert_gguf_directory(source: Path, target: Path) -> None:
    """``rs_jax.assets`` converter: the single ``*.gguf`` file of ``source`` into ``target``."""
    files = sorted(Path(source).glob("*.gguf"))
    if len(files) != 1:
        raise ValueError(f"{source} holds {len(files)} .gguf files, expected one.")
    convert_gguf(files[0], target)
