"""trl's PPO on the set-up of ``lm_ppo.py``: one iteration (generation + ``PPOTrainer.step``), beside ours.

    pip install ".[trl]"                     # in an environment of its own (torch, trl 0.11, peft)
    python benchmarks/lm_ppo.py              # ours, in the rs_jax environment
    python benchmarks/lm_ppo_trl.py          # trl's, in the torch one: adds "trl" to the same JSON

    taskset -c 0 python benchmarks/lm_ppo.py --model smollm2       # ours first: writes the prompt
    taskset -c 0 venv-trl/bin/python benchmarks/lm_ppo_trl.py --model smollm2   # ids and model dir

The same model (``lm_ppo_setup.py``): the tiny GPT-2 (random weights, dropout off, LoRA rank 8 on
``c_attn``) or, with ``--model smollm2`` / a directory, the same safetensors loaded by
``transformers.AutoModelForCausalLM`` (LoRA rank 8 on ``q_proj, k_proj, v_proj, o_proj``) and the
same prompt ids, both read from ours' JSON. float32; LoRA through peft (so the reference is the
base with the adapter switched off, as in ``rs_jax.train.lm_ppo``), trl's value head, B prompts
of P tokens, R sampled tokens each (``min_new_tokens = R``: every response is full length, as our
fixed-length scan computes), the same toy score, fixed β = 0.2, Adam at the same rate, E epochs
× M minibatches. trl 0.11 is the
last release with the classic ``PPOTrainer.step(queries, responses, scores)``; ``PPOConfig`` keeps
its defaults elsewhere (γ = 1, λ = 0.95, clip 0.2, value clip 0.2, value coefficient 0.1, whitened
advantages), which are ours too. Reported: response tokens per second of a whole iteration, its
rollout / update split (trl's own ``time/ppo/*`` timers), and ours / trl's from the JSON's ``ppo``
section when it measured the same set-up. trl is timed with 1 and with all torch threads and the
faster setting is compared (on a shared CPU, OpenMP threads that wait on a busy core are many times
slower); pinned to one core (``taskset -c 0``), only 1 thread is timed. Times are medians of
--repeats iterations after a warm-up one, whose time is recorded apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import lm_ppo_setup as setup
import peft
import tokenizers
import torch
import transformers
import trl


def word_tokenizer(vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over ``t0 … t{V-1}`` (trl pads prompts through a tokenizer; no files)."""
    words = {f"t{index}": index for index in range(vocab_size)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=words, unk_token="t1"))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="t0", unk_token="t1", eos_token=f"t{setup.EOS}"
    )


def toy_scores(responses: list[torch.Tensor]) -> list[torch.Tensor]:
    """``REWARD_WEIGHTS · [# even tokens, −length]`` of each response, as ``lm_ppo.toy_rewards``."""
    even_weight, length_weight = setup.REWARD_WEIGHTS
    return [
        (even_weight * (response % 2 == 0).sum() - length_weight * len(response)).float()
        for response in responses
    ]


def ppo_trainer(args: argparse.Namespace, directory: str | None) -> trl.PPOTrainer:
    """trl's PPOTrainer on a LoRA version of the benchmark's model: a fresh tiny GPT-2, or the
    pre-trained one in ``directory`` (float32, dropout off)."""
    if directory is None:
        base = transformers.GPT2LMHeadModel(transformers.GPT2Config(**setup.gpt2_config(args)))
        tokenizer = word_tokenizer(args.vocab)
    else:
        base = transformers.AutoModelForCausalLM.from_pretrained(
            directory, torch_dtype=torch.float32, local_files_only=True
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
        for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if getattr(base.config, name, 0.0):
                raise SystemExit(f"{directory}: {name} = {getattr(base.config, name)}; ours trains without.")
    adapter = peft.LoraConfig(
        r=setup.LORA_RANK,
        lora_alpha=setup.LORA_ALPHA,
        target_modules=list(setup.lora_targets(args)),
        lora_dropout=0.0,
        fan_in_fan_out=directory is None,  # GPT-2's Conv1D; LLaMA's nn.Linear
        task_type="CAUSAL_LM",
    )
    model = trl.AutoModelForCausalLMWithValueHead.from_pretrained(
        base, peft_config=adapter, summary_dropout_prob=0.0
    )
    config = trl.PPOConfig(
        batch_size=args.prompts,
        mini_batch_size=args.prompts // args.minibatches,
        gradient_accumulation_steps=1,
        ppo_epochs=args.epochs,
        learning_rate=setup.LEARNING_RATE,
        init_kl_coef=0.2,
        adap_kl_ctrl=False,
        seed=0,
    )
    return trl.PPOTrainer(config, model, ref_model=None, tokenizer=tokenizer)


def timed_iteration(trainer: trl.PPOTrainer, queries: list[torch.Tensor], new_tokens: int) -> dict:
    """One PPO iteration: generate R tokens for every query, score, ``step``; seconds of each part."""
    start = time.perf_counter()
    responses = trainer.generate(
        queries,
        batch_size=len(queries),
        return_prompt=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        pad_token_id=trainer.tokenizer.pad_token_id,
    )
    generated = time.perf_counter()
    stats = trainer.step(queries, responses, toy_scores(responses))
    done = time.perf_counter()
    if any(len(response) != new_tokens for response in responses):
        raise RuntimeError("trl generated responses shorter than new_tokens; the token count would be wrong.")
    forward = sum(
        stats[f"time/ppo/{part}"] for part in ("forward_pass", "compute_rewards", "compute_advantages")
    )
    return {
        "iteration_s": done - start,
        "generate_s": generated - start,
        "rollout_s": generated - start + forward,
        "update_s": stats["time/ppo/optimize_step"],
    }


def read_json(path: str) -> dict:
    """The benchmark's JSON so far ({} if there is none yet)."""
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def ours_ratio(result: dict, args: argparse.Namespace, tokens_per_s: float) -> dict:
    """Ours / trl's tokens per second, from ``lm_ppo.py``'s JSON if it measured the same set-up."""
    ours, model = result.get("ppo"), result.get("model", {})
    if ours is None:
        return {"ours_over_trl": None, "why_no_ratio": f"no ppo section in {args.out}: run lm_ppo.py first"}
    same_sizes = all(ours.get(name) == value for name, value in setup.ppo_sizes(args).items())
    if not (setup.same_model(model, args) and same_sizes):
        return {"ours_over_trl": None, "why_no_ratio": "lm_ppo.py ran another set-up; rerun both alike"}
    return {
        "ours_response_tokens_per_s": ours["response_tokens_per_s"],
        "ours_over_trl": ours["response_tokens_per_s"] / tokens_per_s,
    }


def median_iteration(trainer: trl.PPOTrainer, queries: list[torch.Tensor], args: argparse.Namespace) -> dict:
    """Median seconds of each part of ``--repeats`` iterations, after a warm-up one."""
    first = timed_iteration(trainer, queries, args.new_tokens)
    runs = [timed_iteration(trainer, queries, args.new_tokens) for _ in range(args.repeats)]
    medians = {part: statistics.median(run[part] for run in runs) for part in runs[0]}
    return {
        **medians,
        "response_tokens_per_s": args.prompts * args.new_tokens / medians["iteration_s"],
        "first_iteration_s": first["iteration_s"],
    }


def loaded_set_up(result: dict, args: argparse.Namespace) -> tuple[str, list[torch.Tensor]]:
    """(model directory, B prompt-id tensors) that ``lm_ppo.py --model ...`` wrote to the JSON."""
    model, prompt_ids = result.get("model", {}), result.get("prompts", {}).get("ids")
    if not setup.same_model(model, args) or prompt_ids is None:
        raise SystemExit(
            f"{args.out} holds no prompts of --model {args.model}: run "
            f"`python benchmarks/lm_ppo.py --model {args.model}` (same sizes) in the rs_jax "
            "environment first."
        )
    if len(prompt_ids) != args.prompts:
        raise SystemExit(f"{args.out} holds {len(prompt_ids)} prompts, not --prompts {args.prompts}.")
    length = len(prompt_ids[0])
    if args.prompt_length not in (None, length):
        raise SystemExit(
            f"{args.out} holds prompts of {length} tokens, not --prompt-length {args.prompt_length}."
        )
    args.prompt_length = length
    return model["directory"], [torch.tensor(row, dtype=torch.long) for row in prompt_ids]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    setup.add_arguments(parser)
    args = parser.parse_args()
    args = setup.resolve(args)
    load_at_start = os.getloadavg()[0]
    torch.manual_seed(0)
    result = read_json(args.out)
    if setup.is_tiny(args):
        directory = None
        trainer = ppo_trainer(args, directory)
        queries = list(torch.randint(3, args.vocab, (args.prompts, args.prompt_length)))
    else:
        directory, queries = loaded_set_up(result, args)
        trainer = ppo_trainer(args, directory)
    cores = len(os.sched_getaffinity(0))
    by_threads = {}
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        by_threads[threads] = median_iteration(trainer, queries, args)
    best_threads = max(by_threads, key=lambda threads: by_threads[threads]["response_tokens_per_s"])
    best = by_threads[best_threads]
    section = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": {
            "trl": trl.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "cores_allowed": sorted(os.sched_getaffinity(0)),
            "processor": platform.processor() or platform.machine(),
            "load_average_1m_at_start": load_at_start,
            "load_average_1m_at_end": os.getloadavg()[0],
        },
        "model": {
            "source": args.model,
            "directory": directory,
            "class": type(trainer.model.pretrained_model.base_model.model).__name__,
            "dtype": str(next(trainer.model.parameters()).dtype),
            "lora_targets": list(setup.lora_targets(args)),
            "lora_rank": setup.LORA_RANK,
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        },
        "ppo": {**setup.ppo_sizes(args), "repeats": args.repeats, "torch_threads": best_threads, **best},
        "ppo_by_torch_threads": {str(threads): timing for threads, timing in by_threads.items()},
        **ours_ratio(result, args, best["response_tokens_per_s"]),
        "notes": [
            "Same model (config, or the same safetensors), LoRA, prompts, sizes, score, β, optimizer "
            "and PPO hyper-parameters; float32 on CPU both.",
            "Not the same engine: trl runs eager PyTorch (HF generate with its KV cache, then "
            "batched forward passes and per-minibatch backward), ours one jitted XLA program per "
            "iteration (KV-cache sampling in a lax.scan, epochs x minibatches in lax.scan).",
            "trl's rollout = generate + its forward passes, rewards and advantages (its time/ppo/* "
            "timers); its update = time/ppo/optimize_step; the rest of step() (stats) is only in "
            "iteration_s.",
            "trl generates exactly new_tokens per response (min_new_tokens); ours always runs "
            "new_tokens sampling steps (tiny model: a response that samples EOS is masked, not "
            "shortened; a loaded model: no EOS, every token counts).",
            "trl is timed with 1 and with all torch threads (the cores this process may use) and its "
            "faster setting is compared: when other jobs hold a core, torch's OpenMP threads wait on "
            "each other and 2 threads run many times slower than 1. Ours runs XLA's default CPU "
            "threading on the same cores.",
        ],
    }
    result["trl"] = section
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(section, indent=2))
    print(f"wrote the trl section of {args.out}")


if __name__ == "__main__":
    main()
