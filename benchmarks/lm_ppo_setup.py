"""The PPO set-up that both RLHF benchmarks run: ours in JAX (``lm_ppo.py``) and trl's in torch
(``lm_ppo_trl.py``). Standard library only, so that each environment can import it.

Two models (``--model``):

* ``tiny`` (default): a random GPT-2 (``--layers``, ``--width``, ``--vocab``), LoRA on ``c_attn``,
  random prompt ids; the README's first table.
* ``smollm2`` (the ``rs_jax.assets`` SmolLM2-135M-Instruct, float32) or a local HF directory of a
  LLaMA-style causal LM: the pre-trained weights, LoRA on ``q_proj, k_proj, v_proj, o_proj``,
  real prompts (the chat template's "Generate a movie review." turn and the first words of a
  movie-review snippet, cut to the shortest prompt's length so that no prompt is padded). Ours
  tokenizes them and writes the ids and the model's directory into the JSON; trl's side reads
  both from there (it imports neither rs_jax nor jax), so run ours first.
"""

from __future__ import annotations

import argparse
from typing import Any

TINY = "tiny"
EOS = 2  # tiny model: never sampled in practice from a random 512-token model
TINY_LORA_TARGETS = ("c_attn",)
LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_RANK, LORA_ALPHA = 8, 16.0
LEARNING_RATE = 1e-4
REWARD_WEIGHTS = (1.0, 0.1)  # of the two toy components: [# even tokens, −response length]
MOVIE_REVIEW_WORDS = 4  # words of a snippet after the chat template's turn (prompts.movie_review_prompts)
PROMPT_SEED = 0

# Per-model defaults of the sizes left unset on the command line (None).
DEFAULTS = {
    TINY: {"prompts": 32, "prompt_length": 8, "epochs": 4, "minibatches": 4, "repeats": 5},
    "loaded": {"prompts": 16, "prompt_length": None, "epochs": 1, "minibatches": 1, "repeats": 3},
}
DEFAULT_OUT = {TINY: "benchmarks/results/lm_ppo.json", "loaded": "benchmarks/results/lm_ppo_smollm2.json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sizes both benchmarks share (defaults: the README's tables; see ``resolve``)."""
    parser.add_argument(
        "--model",
        default=TINY,
        help="'tiny' (random GPT-2, default), 'smollm2' (the rs_jax asset) or a local HF model directory",
    )
    parser.add_argument("--layers", type=int, default=2, help="tiny model only")
    parser.add_argument("--width", type=int, default=128, help="tiny model only")
    parser.add_argument("--vocab", type=int, default=512, help="tiny model only")
    parser.add_argument("--prompts", type=int, help="B, prompts per PPO iteration (tiny 32, loaded 16)")
    parser.add_argument(
        "--prompt-length",
        type=int,
        help="P (tiny 8; loaded: the shortest tokenized prompt, every prompt cut to it)",
    )
    parser.add_argument("--new-tokens", type=int, default=24, help="R, tokens generated per prompt")
    parser.add_argument("--epochs", type=int, help="PPO epochs per iteration (tiny 4, loaded 1)")
    parser.add_argument("--minibatches", type=int, help="minibatches per epoch (tiny 4, loaded 1)")
    parser.add_argument("--repeats", type=int, help="timed iterations after a warm-up (tiny 5, loaded 3)")
    parser.add_argument(
        "--out", help="JSON (tiny: benchmarks/results/lm_ppo.json; loaded: .../lm_ppo_smollm2.json)"
    )


def is_tiny(args: argparse.Namespace) -> bool:
    return args.model == TINY


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the sizes left unset with the model's defaults (in place; returns ``args``)."""
    defaults = DEFAULTS[TINY if is_tiny(args) else "loaded"]
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = DEFAULT_OUT[TINY if is_tiny(args) else "loaded"]
    if args.prompts % args.minibatches:
        raise SystemExit(
            f"--prompts ({args.prompts}) must be a multiple of --minibatches ({args.minibatches})."
        )
    return args


def lora_targets(args: argparse.Namespace) -> tuple[str, ...]:
    return TINY_LORA_TARGETS if is_tiny(args) else LLAMA_LORA_TARGETS


def gpt2_config(args: argparse.Namespace) -> dict[str, Any]:
    """``transformers.GPT2Config`` keyword arguments of the tiny model (dropout off: neither side
    trains with it)."""
    return {
        "n_layer": args.layers,
        "n_embd": args.width,
        "n_head": max(args.width // 64, 1),
        "vocab_size": args.vocab,
        "n_positions": args.prompt_length + args.new_tokens,
        "eos_token_id": EOS,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }


def ppo_sizes(args: argparse.Namespace) -> dict[str, int]:
    """The ``ppo`` sizes recorded beside each side's times."""
    return {
        "prompts": args.prompts,
        "prompt_length": args.prompt_length,
        "new_tokens": args.new_tokens,
        "epochs": args.epochs,
        "minibatches": args.minibatches,
    }


def same_model(record: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether a JSON's ``model`` section describes the model these arguments ask for."""
    if is_tiny(args):
        return all(record.get(name) == getattr(args, name) for name in ("layers", "width", "vocab"))
    return record.get("source") == args.model
