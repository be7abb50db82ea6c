"""Text RLHF: one LoRA expert per reward model with PPO-KL, their soups, and MORL beside them.

    python -m tasks.text [--preset cpu|paper|smoke] [--out runs/text] [--set key=value ...] [--resume]

Paper Appendix C: a pre-trained causal LM is fine-tuned with PPO and a per-token KL
penalty to the frozen base, through LoRA, once per reward model; the soups of the LoRA
experts are compared with MORL runs on (1-μ)R₁ + μR₂. Here the LM is a LLaMA-architecture
model pre-trained by the task on a generated corpus, and the rewards are scored inside jit
by a real sentence encoder (see configs/text.py). The run directory gets, beside the
shared outputs, ``samples.json``: generations for a few prompts at each λ.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import text as text_config
from rs_jax import cli, experiment, soup
from rs_jax import config as config_lib
from rs_jax.data import corpus as corpus_lib
from rs_jax.models import causal_lm, lora
from rs_jax.rewards import reward_models
from rs_jax.train import lm_ppo, supervised


@dataclasses.dataclass(frozen=True)
class Text:
    """The task's pieces: the corpus, the LM, the rewards and the pre-training declaration."""

    config: text_config.TextConfig
    corpus: corpus_lib.Corpus
    model: Any
    rewards: reward_models.TextRewards
    spec: experiment.RLExperiment
    budget: experiment.Budget
    eval_prompts: tuple[jax.Array, jax.Array]


def language_model_loss(model: Any, params: Any, token_ids: jax.Array) -> tuple[jax.Array, dict]:
    """Next-token cross-entropy (nats per token) of (B, L) sequences ``<bos> words <eos> <pad>…``."""
    words, mask = token_ids[:, 1:], token_ids[:, 1:] != corpus_lib.PAD_ID
    logits = causal_lm.sequence_logits(
        model, params, token_ids[:, :1], jnp.ones_like(token_ids[:, :1]), words, mask
    )
    log_probs = causal_lm.response_log_probs(logits, words, mask)
    loss = -log_probs.sum() / jnp.maximum(mask.sum(), 1)
    return loss, {"cross_entropy": loss}


def build(config: text_config.TextConfig) -> Text:
    """Corpus, model, rewards and the pre-training phase; ``finetune_spec`` adds PPO once the base exists."""
    if config.model:
        raise ValueError(
            "--set model=… is not supported yet: prompting a real LM needs a dataset read with its own "
            "tokenizer, which tasks.text does not build (the cpu preset pre-trains its own LM)."
        )
    if config.lora_mode not in ("delta", "factors"):
        raise ValueError(f"lora_mode must be 'delta' or 'factors', got {config.lora_mode!r}.")
    if len(config.rewards) != 2:
        raise ValueError(f"tasks.text compares two rewards; got {list(config.rewards)}.")
    corpus = corpus_lib.generate_corpus(config.corpus_size, config.seed)
    rewards = reward_models.text_rewards(config.rewards, corpus.vocab)
    pretrain_key, _, _ = experiment.phase_keys(config.seed)

    def make_lm(key):
        return causal_lm.tiny_llama(
            corpus.vocab.size,
            key,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=max(
                config.sentence_length, config.prompt_length + config.ppo.max_new_tokens
            ),
            eos_token_id=corpus.vocab.eos_id,
            bos_token_id=corpus.vocab.bos_id,
            pad_token_id=corpus.vocab.pad_id,
        )

    model, _ = make_lm(pretrain_key)
    sentences = jnp.asarray(corpus.token_ids(config.sentence_length))

    def pretrain_batch(key):
        return sentences[jax.random.randint(key, (config.pretrain_batch,), 0, sentences.shape[0])]

    pretrain_learner = supervised.SupervisedLearner(
        pretrain_batch, lambda params, batch, key: language_model_loss(model, params, batch)
    )
    prompt_ids, prompt_mask = (jnp.asarray(array) for array in corpus.prompt_ids(config.prompt_length))
    repeats = -(-config.eval_prompts // prompt_ids.shape[0])
    eval_prompts = (
        jnp.tile(prompt_ids, (repeats, 1))[: config.eval_prompts],
        jnp.tile(prompt_mask, (repeats, 1))[: config.eval_prompts],
    )
    mus = np.array([[1.0 - mu, mu] for mu in config.morl_mus])
    spec = experiment.RLExperiment(
        reward_names=tuple(config.rewards),
        expert_names=tuple(config.rewards),
        pretrain_learner=pretrain_learner,
        finetune_learner=None,  # set by finetune_spec: PPO needs the pre-trained base
        init_params=lambda key: make_lm(key)[1],
        init_carry=lambda learner, key: None,
        finetune_start=None,
        soup_part=lambda params: params["lora"],
        evaluate=None,
        pretrain_weights=np.zeros(2),
        run_weights=mus,
        run_mus=mus,
    )

    def optimizer(learning_rate: float) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate))

    budget = experiment.Budget(
        pretrain_updates=config.pretrain_updates,
        finetune_updates=config.finetune_updates,
        pretrain_optimizer=optimizer(config.pretrain_learning_rate),
        finetune_optimizer=optimizer(config.finetune_learning_rate),
        num_epochs=config.num_epochs,
        num_minibatches=config.num_minibatches,
        checkpoint_every=config.checkpoint_every,
        rs_points=config.rs_points,
        seed=config.seed,
        pretrain_num_epochs=1,
        pretrain_num_minibatches=1,
    )
    return Text(config, corpus, model, rewards, spec, budget, eval_prompts)


def finetune_spec(task: Text, base_params: Any) -> tuple[experiment.RLExperiment, lm_ppo.LMPPOLearner]:
    """The PPO phase on top of the pre-trained base: learner, shared LoRA start, evaluation."""
    config = task.config
    prompt_ids, prompt_mask = (jnp.asarray(array) for array in task.corpus.prompt_ids(config.prompt_length))

    def sample_prompts(key):
        rows = jax.random.randint(key, (config.prompts_per_update,), 0, prompt_ids.shape[0])
        return prompt_ids[rows], prompt_mask[rows]

    def reward_components(prompts, masks, tokens, response_mask):
        del masks, response_mask  # the bridge skips pads and stops at EOS
        return task.rewards(jnp.concatenate([prompts, tokens], axis=1))

    learner = lm_ppo.LMPPOLearner(
        model=task.model,
        base_params=base_params,
        lora_config=lora_config(config),
        sample_prompts=sample_prompts,
        reward_components=reward_components,
        config=config.ppo,
        eos_id=task.corpus.vocab.eos_id,
        pad_id=task.corpus.vocab.pad_id,
    )
    # Every run starts from the same LoRA factors (A shared, B = 0), so soups average experts
    # fine-tuned from one initialization; only the runs' sampling keys differ.
    shared_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 11)

    def evaluate(lora_params, carry, key):
        del carry
        sample = learner.generate(lora_params, *task.eval_prompts, key)
        return task.rewards(jnp.concatenate([task.eval_prompts[0], sample.tokens], axis=1))

    spec = dataclasses.replace(
        task.spec,
        finetune_learner=learner,
        finetune_start=lambda params, carry, key: (learner.init_params(shared_key), learner.init_carry()),
        evaluate=evaluate,
    )
    return spec, learner


def lora_config(config: text_config.TextConfig) -> lora.LoraConfig:
    return lora.LoraConfig(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_targets)


def _delta_rs(task: Text, spec, trained, eval_key) -> experiment.Evaluation:
    """RS in the exact LoRA delta mode (ranks concatenated), one compile for every λ."""
    experts = [trained.runs[index] for index in trained.expert_indices]
    evaluate = jax.jit(lambda lora_params: spec.evaluate(lora_params, None, eval_key))
    grid = soup.simplex_grid(len(experts), task.config.rs_points)
    samples = [
        np.asarray(evaluate(lora.interpolate_lora(experts, row, lora_config(task.config), mode="delta")))
        for row in grid
    ]
    return experiment.Evaluation.from_samples(grid, np.stack(samples))


def _write_samples(run_dir: str, task: Text, learner: lm_ppo.LMPPOLearner, trained, key) -> None:
    """samples.json: generations for the first prompts at λ = 0, 0.25, …, 1 (delta soups) and the init."""
    experts = [trained.runs[index] for index in trained.expert_indices]
    count = task.config.sample_prompts
    prompts, masks = (array[:count] for array in task.eval_prompts)
    generate = jax.jit(lambda lora_params: learner.generate(lora_params, prompts, masks, key).tokens)
    vocabulary = task.corpus.vocab
    # The init as a rank-2r delta soup of itself (= the base), so every member has one shape: one compile.
    members = {"init": lora.interpolate_lora([trained.init] * 2, [0.5, 0.5], lora_config(task.config))}
    for lam in (0.0, 0.25, 0.5, 0.75, 1.0):
        members[f"λ={lam:g}"] = lora.interpolate_lora(experts, [1.0 - lam, lam], lora_config(task.config))
    prompt_texts = [
        vocabulary.decode(prompt[mask.astype(bool)])
        for prompt, mask in zip(np.asarray(prompts), np.asarray(masks))
    ]
    texts = {}
    for label, lora_params in members.items():
        responses = np.asarray(generate(lora_params))
        texts[label] = [
            f"{prompt} | {vocabulary.decode(response)}" for prompt, response in zip(prompt_texts, responses)
        ]
    with open(os.path.join(run_dir, "samples.json"), "w") as handle:
        json.dump({"reward_names": list(task.config.rewards), "samples": texts}, handle, indent=2)


def run(
    run_dir: str, config: text_config.TextConfig, *, resume: bool = False, shard: bool = False
) -> dict[str, Any]:
    """The whole experiment; writes the run directory and returns the summary numbers."""
    task = build(config)
    run_config = config_lib.to_dict(config)
    experiment.start_run(run_dir, run_config, resume=resume)
    base_params, _ = experiment.pretrain(run_dir, task.spec, task.budget, resume=resume, shard=shard)
    spec, learner = finetune_spec(task, base_params)
    trained = experiment.finetune(run_dir, spec, task.budget, base_params, None, resume=resume, shard=shard)
    _, _, eval_key = experiment.phase_keys(config.seed)

    def eval_fn(lora_params):
        return spec.evaluate(lora_params, None, eval_key)

    factors_rs, morl, init, _ = experiment.evaluate_runs(trained, eval_fn, config.rs_points)
    delta_rs = _delta_rs(task, spec, trained, eval_key)
    rs, other, other_name = (
        (delta_rs, factors_rs, "RS with LoRA factors averaged")
        if config.lora_mode == "delta"
        else (factors_rs, delta_rs, "RS with exact LoRA deltas")
    )
    summary = experiment.write_results(
        run_dir,
        reward_names=spec.reward_names,
        expert_names=spec.expert_names,
        rs=rs,
        morl=morl,
        init=init,
        extra_soups={other_name: other},
        config=run_config,
        lmc_tolerance=2.0 * float(rs.stderrs.max()),
    )
    _write_samples(run_dir, task, learner, trained, eval_key)
    return summary


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(
        argv,
        prog="python -m tasks.text",
        description=__doc__,
        configs=text_config,
        run=run,
        default_out="runs/text",
    )


if __name__ == "__main__":
    main()
