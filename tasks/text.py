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
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import text as text_config
from rs_jax import checkpoint, cli, operands, pipeline, soup
from rs_jax.data import corpus as corpus_lib
from rs_jax.data import prompts as prompts_lib
from rs_jax.models import causal_lm, lora
from rs_jax.rewards import reward_models, tokenizer_bridge
from rs_jax.train import lm_ppo, supervised


@dataclasses.dataclass(frozen=True)
class Policy:
    """The policy LM, its prompts and its tokens.

    Attributes:
      model: the Flax causal LM.
      pretraining: how its params come about (pre-trained here or loaded).
      rewards: the reward models, reading the policy's ids.
      prompts / eval_prompts: (M, P) and (E, P) left-padded prompt ids and mask.
      eos_id, pad_id: the policy's special tokens.
      decode: (N, L) ids, (N, L) mask -> N texts.
    """

    model: Any
    pretraining: pipeline.Pretraining | pipeline.Pretrained
    rewards: reward_models.TextRewards
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


def loaded_policy(config: text_config.TextConfig) -> Policy:
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

    def decode(ids: np.ndarray, mask: np.ndarray) -> list[str]:
        return tokenizer_bridge.decode_texts(tokenizer, ids, mask)

    return Policy(
        model=model,
        pretraining=pipeline.Pretrained(params),
        rewards=reward_models.text_rewards(config.rewards, tokenizer),
        prompts=prompt_arrays,
        eval_prompts=_repeat_rows(prompt_arrays, config.eval_prompts),
        eos_id=None if eos_id is None else int(eos_id),
        pad_id=prompts_lib.pad_id_of(tokenizer),
        decode=decode,
    )


def generated_policy(config: text_config.TextConfig) -> Policy:
    """A tiny LLaMA that the task pre-trains on a generated review corpus, prompted with its openings."""
    corpus = corpus_lib.generate_corpus(config.corpus_size, config.seed)
    vocabulary = corpus.vocab

    def make_lm(key):
        return causal_lm.tiny_llama(
            vocabulary.size,
            key,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=max(
                config.sentence_length, config.prompt_length + config.ppo.max_new_tokens
            ),
            eos_token_id=vocabulary.eos_id,
            bos_token_id=vocabulary.bos_id,
            pad_token_id=vocabulary.pad_id,
        )

    pretrain_key, _, _ = pipeline.phase_keys(config.seed)
    model, _ = make_lm(pretrain_key)
    sentences = jnp.asarray(corpus.token_ids(config.sentence_length))

    def pretrain_batch(key):
        return sentences[jax.random.randint(key, (config.pretrain_batch,), 0, sentences.shape[0])]

    learner = supervised.SupervisedLearner(
        pretrain_batch, lambda params, batch, key: language_model_loss(model, params, batch)
    )
    prompts = tuple(jnp.asarray(array) for array in corpus.prompt_ids(config.prompt_length))

    def decode(ids: np.ndarray, mask: np.ndarray) -> list[str]:
        return [vocabulary.decode(row[keep.astype(bool)]) for row, keep in zip(ids, mask)]

    return Policy(
        model=model,
        pretraining=pipeline.Pretraining(
            learner=learner, init=lambda key: (make_lm(key)[1], None), reward_weights=np.zeros(2)
        ),
        rewards=reward_models.text_rewards(config.rewards, vocabulary),
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
    learner: lm_ppo.LMPPOLearner, eval_prompts: tuple[jax.Array, jax.Array], lora_params, key
) -> jax.Array:
    """(E, C) rewards of the policy's sampled responses to the E evaluation prompts."""
    sample = learner.generate(lora_params, *eval_prompts, key)
    return learner.reward_components(*eval_prompts, sample.tokens, sample.mask)


def _responses(learner: lm_ppo.LMPPOLearner, prompts, masks, key, lora_params) -> tuple[jax.Array, jax.Array]:
    """(B, R) response tokens and mask of the policy with these LoRA params."""
    sample = learner.generate(lora_params, prompts, masks, key)
    return sample.tokens, sample.mask


def lora_config(config: text_config.TextConfig) -> lora.LoraConfig:
    return lora.LoraConfig(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_targets)


def _samples(
    config: text_config.TextConfig, policy: Policy, learner: lm_ppo.LMPPOLearner, outcome: pipeline.Outcome
) -> dict[str, Any]:
    """Generations for the first prompts at λ = 0, 0.25, …, 1 (delta soups) and the init."""
    trained = outcome.trained
    prompts, masks = (array[: config.sample_prompts] for array in policy.eval_prompts)
    generate = operands.jit(jax.tree_util.Partial(_responses, learner, prompts, masks, outcome.eval_key))
    # The init as a rank-2r delta soup of itself (= the base), so every member has one shape: one compile.
    members = {"init": lora.interpolate_lora([trained.init] * 2, [0.5, 0.5], lora_config(config))}
    for lam in (0.0, 0.25, 0.5, 0.75, 1.0):
        members[f"λ={lam:g}"] = lora.interpolate_lora(trained.experts, [1.0 - lam, lam], lora_config(config))
    prompt_texts = policy.decode(np.asarray(prompts), np.asarray(masks))
    texts = {}
    for label, lora_params in members.items():
        responses, response_masks = (np.asarray(array) for array in generate(lora_params))
        texts[label] = [
            f"{prompt} | {response}"
            for prompt, response in zip(prompt_texts, policy.decode(responses, response_masks))
        ]
    return {"reward_names": list(config.rewards), "samples": texts}


def build(config: text_config.TextConfig) -> pipeline.Task:
    """The task's declaration: policy (loaded with ``config.model``, else generated and pre-trained),
    rewards, and PPO on top of the pre-trained base."""
    if config.lora_mode not in ("delta", "factors"):
        raise ValueError(f"lora_mode must be 'delta' or 'factors', got {config.lora_mode!r}.")
    if len(config.rewards) != 2:
        raise ValueError(f"tasks.text compares two rewards; got {list(config.rewards)}.")
    if config.prompts and not config.model:
        raise ValueError("--set prompts=… needs --set model=…: the generated corpus brings its own prompts.")
    policy = loaded_policy(config) if config.model else generated_policy(config)
    lora_settings = lora_config(config)
    delta = jax.tree_util.Partial(lora.interpolate_stacked_lora, config=lora_settings, mode="delta")

    def finetuning(base_params, carry) -> pipeline.FineTuning:
        """LoRA PPO on the frozen base. The base params, the reward model's params and the prompts
        are leaves of the learner (its callables are ``jax.tree_util.Partial``), so the compiled
        update and sweep take them as operands, never as constants."""
        del carry
        learner = lm_ppo.LMPPOLearner(
            model=policy.model,
            base_params=base_params,
            lora_config=lora_settings,
            sample_prompts=jax.tree_util.Partial(
                _sample_prompt_rows, policy.prompts, config.prompts_per_update
            ),
            reward_components=jax.tree_util.Partial(
                _score_responses, policy.rewards.apply, policy.rewards.params
            ),
            config=config.ppo,
            eos_id=policy.eos_id,
            pad_id=policy.pad_id,
        )
        # Every run starts from the same LoRA factors (A shared, B = 0), so soups average experts
        # fine-tuned from one initialization; only the runs' sampling keys differ.
        shared_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 11)

        def extra_soups(trained: pipeline.TrainedRuns) -> dict[str, pipeline.SoupFamily]:
            grid = soup.simplex_grid(len(trained.expert_indices), config.rs_points)
            members = np.zeros((len(grid), len(trained.runs) + 1))
            members[:, trained.expert_indices] = grid
            if config.lora_mode == "delta":
                return {"RS with LoRA factors averaged": pipeline.SoupFamily(grid, members)}
            return {"RS with exact LoRA deltas": pipeline.SoupFamily(grid, members, delta)}

        return pipeline.FineTuning(
            learner=learner,
            start=lambda key: (learner.init_params(shared_key), learner.init_carry(key)),
            evaluate=jax.tree_util.Partial(_evaluate_responses, learner, policy.eval_prompts),
            soup_part=lambda params: params["lora"],
            merge=delta if config.lora_mode == "delta" else None,
            base_fingerprint=checkpoint.fingerprint(base_params),
            extra_soups=extra_soups,
            report=lambda outcome: pipeline.Report(
                json_files={"samples.json": _samples(config, policy, learner, outcome)}
            ),
        )

    mus = np.array([[1.0 - mu, mu] for mu in config.morl_mus])
    return pipeline.Task(
        name="text",
        reward_names=tuple(config.rewards),
        expert_names=tuple(config.rewards),
        run_mus=mus,
        run_weights=mus,
        pretraining=policy.pretraining,
        finetuning=finetuning,
        budget=config.budget,
        seed=config.seed,
        rs_points=config.rs_points,
    )


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(argv, name="text", description=__doc__, configs=text_config, build=build)


if __name__ == "__main__":
    main()
