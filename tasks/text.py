"""Text RLHF: one LoRA expert per reward model with PPO-KL, their soups, and MORL beside them.

    python -m tasks.text [--preset cpu|paper|smoke] [--out runs/text] [--set key=value ...] [--resume]

Paper Appendix C: a pre-trained causal LM is fine-tuned with PPO and a per-token KL
penalty to the frozen base, through LoRA, once per reward model; the soups of the LoRA
experts are compared with MORL runs on (1-μ)R₁ + μR₂. By default the LM is a
LLaMA-architecture model pre-trained by the task on a generated corpus, and the rewards are
scored inside jit by a real sentence encoder (see configs/text.py). With
``--set model=DIR prompts=FILE`` the policy is the pre-trained causal LM of a local HF
directory (LLaMA, GPT-2, OPT, …; no pre-training), prompted with the texts of FILE through its
own tokenizer; its samples reach the reward models through the text bridge
(``rs_jax.rewards.tokenizer_bridge``). The run directory gets, beside the shared outputs,
``samples.json``: generations for a few prompts at each λ.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import text as text_config
from rs_jax import cli, experiment, operands, soup
from rs_jax import config as config_lib
from rs_jax.data import corpus as corpus_lib
from rs_jax.data import prompts as prompts_lib
from rs_jax.models import causal_lm, lora
from rs_jax.rewards import reward_models, tokenizer_bridge
from rs_jax.train import lm_ppo, supervised


@dataclasses.dataclass(frozen=True)
class Text:
    """The task's pieces: the LM, its prompts, the rewards and the pre-training declaration.

    Attributes:
      corpus: the generated corpus (None with a loaded ``config.model``).
      pretrained: the loaded model's params (None: the task pre-trains its own LM).
      prompts: (M, P) left-padded RL prompt ids and mask.
      eval_prompts: (E, P) prompt ids and mask of the evaluations.
      eos_id, pad_id: the policy's special tokens.
      decode: (N, L) ids, (N, L) mask -> N texts (the policy's own decoding).
    """

    config: text_config.TextConfig
    corpus: corpus_lib.Corpus | None
    model: Any
    pretrained: Any
    rewards: reward_models.TextRewards
    spec: experiment.RLExperiment
    budget: experiment.Budget
    prompts: tuple[jax.Array, jax.Array]
    eval_prompts: tuple[jax.Array, jax.Array]
    eos_id: int | None
    pad_id: int
    decode: Callable[[np.ndarray, np.ndarray], list[str]]


def language_model_loss(model: Any, params: Any, token_ids: jax.Array) -> tuple[jax.Array, dict]:
    """Next-token cross-entropy (nats per token) of (B, L) sequences ``<bos> words <eos> <pad>…``."""
    words, mask = token_ids[:, 1:], token_ids[:, 1:] != corpus_lib.PAD_ID
    logits = causal_lm.sequence_logits(
        model, params, token_ids[:, :1], jnp.ones_like(token_ids[:, :1]), words, mask
    )
    log_probs = causal_lm.response_log_probs(logits, words, mask)
    loss = -log_probs.sum() / jnp.maximum(mask.sum(), 1)
    return loss, {"cross_entropy": loss}


def _repeat_rows(prompts: tuple[jax.Array, jax.Array], count: int) -> tuple[jax.Array, jax.Array]:
    """The first ``count`` rows of the prompts tiled: (M, P) -> (count, P) ids and mask."""
    repeats = -(-count // prompts[0].shape[0])
    return tuple(jnp.tile(array, (repeats, 1))[:count] for array in prompts)


def _spec(config: text_config.TextConfig, pretrain_learner: Any, init_params: Any) -> experiment.RLExperiment:
    """The experiment declaration shared by both policies (``finetune_spec`` adds PPO)."""
    mus = np.array([[1.0 - mu, mu] for mu in config.morl_mus])
    return experiment.RLExperiment(
        reward_names=tuple(config.rewards),
        expert_names=tuple(config.rewards),
        pretrain_learner=pretrain_learner,
        finetune_learner=None,  # set by finetune_spec: PPO needs the pre-trained base
        init_params=init_params,
        init_carry=lambda learner, key: None,
        finetune_start=None,
        soup_part=lambda params: params["lora"],
        evaluate=None,
        pretrain_weights=np.zeros(2),
        run_weights=mus,
        run_mus=mus,
    )


def _budget(config: text_config.TextConfig) -> experiment.Budget:
    return experiment.Budget.from_config(config, pretrain_num_epochs=1, pretrain_num_minibatches=1)


def build_pretrained(config: text_config.TextConfig) -> Text:
    """A pre-trained causal LM of a local HF directory (``config.model``) with its own tokenizer,
    prompted with ``config.prompts``; the rewards read its samples through the text bridge.

    Raises:
      ValueError: on a missing prompts file, a directory without a causal LM or a tokenizer.
    """
    if not config.prompts:
        raise ValueError(
            "--set model=… needs --set prompts=FILE: a JSONL file with a 'prompt' or 'text' field "
            "per line, or a text file with one prompt per line (e.g. IMDB review beginnings)."
        )
    prompts = prompts_lib.read_prompts(config.prompts)  # before loading a 7B model: fail fast
    model, params = causal_lm.load_causal_lm(config.model)
    tokenizer = tokenizer_bridge.load_tokenizer(config.model)
    prompt_arrays = tuple(
        jnp.asarray(array) for array in prompts_lib.tokenize_prompts(prompts, tokenizer, config.prompt_length)
    )
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    if isinstance(eos_id, list | tuple):  # some configs list several EOS ids
        eos_id = eos_id[0]
    rewards = reward_models.text_rewards(config.rewards, tokenizer)

    def decode(ids: np.ndarray, mask: np.ndarray) -> list[str]:
        return tokenizer_bridge.decode_texts(tokenizer, ids, mask)

    return Text(
        config=config,
        corpus=None,
        model=model,
        pretrained=params,
        rewards=rewards,
        spec=_spec(config, None, lambda key: params),
        budget=_budget(config),
        prompts=prompt_arrays,
        eval_prompts=_repeat_rows(prompt_arrays, config.eval_prompts),
        eos_id=None if eos_id is None else int(eos_id),
        pad_id=prompts_lib.pad_id_of(tokenizer),
        decode=decode,
    )


def build(config: text_config.TextConfig) -> Text:
    """Policy, prompts, rewards and the pre-training phase; ``finetune_spec`` adds PPO once the base
    exists. With ``config.model`` the policy is loaded (``build_pretrained``), else generated."""
    if config.lora_mode not in ("delta", "factors"):
        raise ValueError(f"lora_mode must be 'delta' or 'factors', got {config.lora_mode!r}.")
    if len(config.rewards) != 2:
        raise ValueError(f"tasks.text compares two rewards; got {list(config.rewards)}.")
    if config.model:
        return build_pretrained(config)
    if config.prompts:
        raise ValueError("--set prompts=… needs --set model=…: the generated corpus brings its own prompts.")
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
    prompts = tuple(jnp.asarray(array) for array in corpus.prompt_ids(config.prompt_length))
    vocabulary = corpus.vocab

    def decode(ids: np.ndarray, mask: np.ndarray) -> list[str]:
        return [vocabulary.decode(row[keep.astype(bool)]) for row, keep in zip(ids, mask)]

    return Text(
        config=config,
        corpus=corpus,
        model=model,
        pretrained=None,
        rewards=rewards,
        spec=_spec(config, pretrain_learner, lambda key: make_lm(key)[1]),
        budget=_budget(config),
        prompts=prompts,
        eval_prompts=_repeat_rows(prompts, config.eval_prompts),
        eos_id=vocabulary.eos_id,
        pad_id=vocabulary.pad_id,
        decode=decode,
    )


def _sample_prompt_rows(prompts: tuple[jax.Array, jax.Array], count: int, key: jax.Array):
    """``count`` rows drawn (with replacement) from (M, P) prompt ids and mask -> (count, P) each."""
    rows = jax.random.randint(key, (count,), 0, prompts[0].shape[0])
    return prompts[0][rows], prompts[1][rows]


def _score_responses(
    apply_rewards: Callable, reward_params: Any, prompts, masks, tokens, response_mask
) -> jax.Array:
    """(B, C) reward components of the prompts with their responses (pads, after-EOS masked).

    Args:
      apply_rewards, reward_params: ``TextRewards.apply`` and ``TextRewards.params``.
      prompts, masks: (B, P) prompt ids and mask; tokens, response_mask: (B, R) responses.
    """
    return apply_rewards(
        reward_params,
        jnp.concatenate([prompts, tokens], axis=1),
        jnp.concatenate([masks, response_mask], axis=1),
    )


def _evaluate_responses(
    learner: lm_ppo.LMPPOLearner, eval_prompts: tuple[jax.Array, jax.Array], lora_params, carry, key
) -> jax.Array:
    """(E, C) rewards of the policy's sampled responses to the E evaluation prompts."""
    del carry
    sample = learner.generate(lora_params, *eval_prompts, key)
    return learner.reward_components(*eval_prompts, sample.tokens, sample.mask)


def finetune_spec(task: Text, base_params: Any) -> tuple[experiment.RLExperiment, lm_ppo.LMPPOLearner]:
    """The PPO phase on top of the pre-trained base: learner, shared LoRA start, evaluation.

    The base params, the reward model's params and the prompts are leaves of the learner (its
    callables are ``jax.tree_util.Partial``), so the compiled update and sweep take them as
    operands, never as constants.
    """
    config = task.config
    learner = lm_ppo.LMPPOLearner(
        model=task.model,
        base_params=base_params,
        lora_config=lora_config(config),
        sample_prompts=jax.tree_util.Partial(_sample_prompt_rows, task.prompts, config.prompts_per_update),
        reward_components=jax.tree_util.Partial(_score_responses, task.rewards.apply, task.rewards.params),
        config=config.ppo,
        eos_id=task.eos_id,
        pad_id=task.pad_id,
    )
    # Every run starts from the same LoRA factors (A shared, B = 0), so soups average experts
    # fine-tuned from one initialization; only the runs' sampling keys differ.
    shared_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 11)
    spec = dataclasses.replace(
        task.spec,
        finetune_learner=learner,
        finetune_start=lambda params, carry, key: (learner.init_params(shared_key), learner.init_carry()),
        evaluate=jax.tree_util.Partial(_evaluate_responses, learner, task.eval_prompts),
    )
    return spec, learner


def lora_config(config: text_config.TextConfig) -> lora.LoraConfig:
    return lora.LoraConfig(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_targets)


def _delta_rs(task: Text, spec, trained, eval_key) -> experiment.Evaluation:
    """RS in the exact LoRA delta mode (ranks concatenated), one compile for every λ."""
    experts = [trained.runs[index] for index in trained.expert_indices]
    evaluate = operands.jit(experiment.bind_evaluation(spec.evaluate, None, eval_key))
    grid = soup.simplex_grid(len(experts), task.config.rs_points)
    samples = [
        np.asarray(evaluate(lora.interpolate_lora(experts, row, lora_config(task.config), mode="delta")))
        for row in grid
    ]
    return experiment.Evaluation.from_samples(grid, np.stack(samples))


def _responses(learner: lm_ppo.LMPPOLearner, prompts, masks, key, lora_params) -> tuple[jax.Array, jax.Array]:
    """(B, R) response tokens and mask of the policy with these LoRA params."""
    sample = learner.generate(lora_params, prompts, masks, key)
    return sample.tokens, sample.mask


def _write_samples(run_dir: str, task: Text, learner: lm_ppo.LMPPOLearner, trained, key) -> None:
    """samples.json: generations for the first prompts at λ = 0, 0.25, …, 1 (delta soups) and the init."""
    experts = [trained.runs[index] for index in trained.expert_indices]
    count = task.config.sample_prompts
    prompts, masks = (array[:count] for array in task.eval_prompts)

    generate = operands.jit(jax.tree_util.Partial(_responses, learner, prompts, masks, key))
    # The init as a rank-2r delta soup of itself (= the base), so every member has one shape: one compile.
    members = {"init": lora.interpolate_lora([trained.init] * 2, [0.5, 0.5], lora_config(task.config))}
    for lam in (0.0, 0.25, 0.5, 0.75, 1.0):
        members[f"λ={lam:g}"] = lora.interpolate_lora(experts, [1.0 - lam, lam], lora_config(task.config))
    prompt_texts = task.decode(np.asarray(prompts), np.asarray(masks))
    texts = {}
    for label, lora_params in members.items():
        responses, response_masks = (np.asarray(array) for array in generate(lora_params))
        texts[label] = [
            f"{prompt} | {response}"
            for prompt, response in zip(prompt_texts, task.decode(responses, response_masks))
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
    if task.pretrained is None:
        base_params, _ = experiment.pretrain(run_dir, task.spec, task.budget, resume=resume, shard=shard)
    else:  # a loaded pre-trained LM: no pre-training phase
        base_params = task.pretrained
    spec, learner = finetune_spec(task, base_params)
    trained = experiment.finetune(run_dir, spec, task.budget, base_params, None, resume=resume, shard=shard)
    _, _, eval_key = experiment.phase_keys(config.seed)
    eval_fn = experiment.bind_evaluation(spec.evaluate, None, eval_key)
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
