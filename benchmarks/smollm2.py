"""SmolLM2-135M-Instruct from its GGUF, and the two learned text rewards on its movie reviews.

``python -m benchmarks.smollm2`` (fetches the ``smollm2``, ``minilm``, ``vader`` and ``toxicity``
assets on first use) measures, and writes to ``benchmarks/results/smollm2.json``:

* the wall time of loading the converted model (``causal_lm.load_causal_lm``);
* the perplexity of a plain English sentence, and a greedy answer to "Generate a movie review."
  through the chat template;
* one jitted forward pass of a (32, 48) batch, and a KV-cached greedy generation of 32 new
  tokens for 32 prompts (``causal_lm.generate``), compile time apart;
* sampled answers (temperature 1) to 100 movie-review prompts (``prompts.movie_review_prompts``:
  the chat template, then the first 4 words of a random snippet), scored by ``"sentiment"``
  (MiniLM + ridge head) and ``"harmless"`` (1 − p(toxic) of the Jigsaw BiLSTM) on the response
  tokens, and the Pearson and Spearman correlations of the two rewards across those answers.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine_info, median_seconds, write_result
from rs_jax import assets
from rs_jax.data import prompts
from rs_jax.models import causal_lm
from rs_jax.rewards import reward_models, tokenizer_bridge

SENTENCE = (
    "The quick brown fox jumps over the lazy dog. "
    "It was a sunny day and the children were playing in the park."
)


def perplexity(model: Any, params: Any, tokenizer: Any, text: str) -> float:
    """exp(mean next-token negative log-likelihood) of ``text`` (no BOS: SmolLM2 adds none)."""
    ids = np.asarray([tokenizer(text)["input_ids"]], np.int32)
    logits = jax.jit(lambda p, i: model(i, params=p).logits)(params, ids)[0, :-1]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), ids[0, 1:, None], -1).mean()
    return float(jnp.exp(nll))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responses", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--out", default="benchmarks/results/smollm2.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine_info()}
    directory = assets.path("smollm2")

    start = time.perf_counter()
    model, params = causal_lm.load_causal_lm(directory)
    params = jax.block_until_ready(params)
    result["load_seconds"] = round(time.perf_counter() - start, 1)
    tokenizer = tokenizer_bridge.load_tokenizer(directory)
    result["perplexity"] = {
        "text": SENTENCE,
        "perplexity": round(perplexity(model, params, tokenizer, SENTENCE), 2),
    }
    print(result)

    # Forward pass of a (32, 48) batch.
    ids = np.random.default_rng(0).integers(17, 49152, (32, 48)).astype(np.int32)
    forward = jax.jit(lambda p, i: model(i, params=p).logits)
    start = time.perf_counter()
    jax.block_until_ready(forward(params, ids))
    result["forward_32x48"] = {
        "first_call_seconds": round(time.perf_counter() - start, 2),
        "median_seconds": round(median_seconds(lambda: forward(params, ids), 3), 3),
    }
    print(result["forward_32x48"])

    eos = tokenizer.eos_token_id
    generate = jax.jit(
        functools.partial(causal_lm.generate, model, eos_id=eos, pad_id=eos),
        static_argnames=("max_new_tokens", "greedy", "temperature"),
    )

    # Greedy answer to the bare instruction.
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompts.MOVIE_REVIEW_INSTRUCTION}], add_generation_prompt=True
    )
    chat_ids, chat_mask = np.asarray([chat], np.int32), np.ones((1, len(chat)), np.int32)
    sample = generate(params, chat_ids, chat_mask, jax.random.key(0), max_new_tokens=64, greedy=True)
    tokens = np.asarray(sample.tokens[0])[np.asarray(sample.mask[0])]
    result["greedy_answer"] = tokenizer.decode(tokens, skip_special_tokens=True)
    print(repr(result["greedy_answer"]))

    # KV-cached greedy generation: 32 prompts x 32 new tokens.
    texts = prompts.movie_review_prompts(tokenizer, num_words=4, count=args.responses, seed=0)
    length = max(len(row) for row in tokenizer(texts)["input_ids"])
    prompt_ids, prompt_mask = prompts.tokenize_prompts(texts, tokenizer, length)
    batch = (prompt_ids[:32], prompt_mask[:32])
    start = time.perf_counter()
    jax.block_until_ready(generate(params, *batch, jax.random.key(1), max_new_tokens=32, greedy=True).tokens)
    result["generate_32x32_greedy"] = {
        "prompt_length": int(length),
        "first_call_seconds": round(time.perf_counter() - start, 2),
        "median_seconds": round(
            median_seconds(
                lambda: generate(params, *batch, jax.random.key(1), max_new_tokens=32, greedy=True).tokens, 2
            ),
            2,
        ),
    }
    print(result["generate_32x32_greedy"])

    # Sampled answers to the movie-review prompts, scored by the two learned rewards.
    sample = generate(params, prompt_ids, prompt_mask, jax.random.key(2), max_new_tokens=args.new_tokens)
    rewards = reward_models.text_rewards(("sentiment", "harmless"), tokenizer)
    values = np.asarray(jax.jit(rewards.apply)(rewards.params, sample.tokens, sample.mask))
    answers = tokenizer_bridge.decode_texts(tokenizer, np.asarray(sample.tokens), np.asarray(sample.mask))
    ranks = np.argsort(np.argsort(values, axis=0), axis=0)
    order = np.argsort(values[:, 0])
    result["rewards_on_sampled_answers"] = {
        "responses": args.responses,
        "new_tokens": args.new_tokens,
        "temperature": 1.0,
        "scored": "response tokens only",
        "mean": {name: round(float(value), 3) for name, value in zip(rewards.names, values.mean(0))},
        "std": {name: round(float(value), 3) for name, value in zip(rewards.names, values.std(0))},
        "pearson": round(float(np.corrcoef(values.T)[0, 1]), 3),
        "spearman": round(float(np.corrcoef(ranks.T)[0, 1]), 3),
        "lowest_sentiment": [
            (texts[i].rsplit("\n", 1)[-1], answers[i], [round(float(value), 3) for value in values[i]])
            for i in order[:3]
        ],
        "highest_sentiment": [
            (texts[i].rsplit("\n", 1)[-1], answers[i], [round(float(value), 3) for value in values[i]])
            for i in order[-3:]
        ],
        "least_harmless": [
            (texts[i].rsplit("\n", 1)[-1], answers[i], [round(float(value), 3) for value in values[i]])
            for i in np.argsort(values[:, 1])[:3]
        ],
    }
    print(result["rewards_on_sampled_answers"])
    write_result(args.out, result)


if __name__ == "__main__":
    main()
