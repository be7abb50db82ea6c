"""The tiny GPT-2 PPO set-up that both RLHF benchmarks run: ours in JAX (``lm_ppo.py``) and trl's in
torch (``lm_ppo_trl.py``). Standard library only, so that each environment can import it."""

from __future__ import annotations

import argparse
from typing import Any

EOS = 2  # never sampled in practice from a random 512-token model; both sides generate every token
LORA_TARGETS = ("c_attn",)
LORA_RANK, LORA_ALPHA = 8, 16.0
LEARNING_RATE = 1e-4
REWARD_WEIGHTS = (1.0, 0.1)  # of the two toy components: [# even tokens, −response length]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sizes both benchmarks share (defaults: the README's table)."""
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=32, help="B, prompts per PPO iteration")
    parser.add_argument("--prompt-length", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/lm_ppo.json")


def gpt2_config(args: argparse.Namespace) -> dict[str, Any]:
    """``transformers.GPT2Config`` keyword arguments (dropout off: neither side trains with it)."""
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
