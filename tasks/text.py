"""Text RLHF: one LoRA expert per reward model with PPO-KL, their soups, and MORL beside them.

    python -m tasks.text [--preset cpu|real|paper|smoke] [--out runs/text] [--set key=value ...] [--resume]

Paper Appendix C: a pre-trained causal LM is fine-tuned with PPO and a per-token KL
penalty to the frozen base, through LoRA, once per reward model; the soups of the LoRA
experts are compared with MORL runs on (1-μ)R₁ + μR₂. By default the LM is a
LLaMA-architecture model pre-trained by the task on a generated corpus, and the rewards are
scored inside jit by a real sentence encoder (see configs/text.py). With
``--set model=DIR prompts=FILE`` the policy is the pre-trained causal LM of a local HF
directory (LLaMA, GPT-2, OPT, …; no pre-training), prompted with the texts of FILE through its
own tokenizer; its samples reach the reward models through the text bridge
(``rs_jax.rewards.tokenizer_bridge``). With ``decoding_mixing`` the run also reports MOD's
decoding-time mixing of the experts (base + each LoRA, N forward passes per token) at the RS
grid. The run directory gets, beside the shared outputs,
``samples.json``: generations for a few prompts at each λ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import text as text_config
from rs_jax import assets, checkpoint, cli, operands, pipeline, soup
from rs_jax.data import corpus as corpus_lib
from rs_jax.data import prompts as prompts_lib
from rs_jax.experiment import Evaluation
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
      header_length: prompt tokens after the left padding that the rewards and the samples
        skip (a chat template's system and user turns; 0: the rewards read the whole prompt).
    """

    model: Any
    pretraining: pipeline.Pretraining | pipeline.Pretrained
    rewards: reward_models.TextRewards
    prompts: tuple[jax.Array, jax.Array]
    eval_prompts: tuple[jax.Array, jax.Array]
    eos_id: int | None
    pad_id: int
    decode: Callable[[np.ndarray, np.ndarray], list[str]]
    header_length: int = 0


def language_model_loss(model: Any, params: Any, token_ids: jax.Array) -> tuple[jax.Array, dict]:
    """Next-token cross-entropy (nats per token) of (B, L) sequences ``<bos> words <eos> <pad>…``."""
    words, mask = token_ids[:, 1:], token_ids[:, 1:] != corpus_lib.PAD_ID
    logits = causal_lm.sequence_outputs(
        model, params, token_ids[:, :1], jnp.ones_like(token_ids[:, :1]), words, mask
    )[0]
    log_probs = causal_lm.response_log_probs(logits, words, mask)
    loss = -log_probs.sum() / jnp.maximum(mask.sum(), 1)
    return loss, {"cross_entropy": loss}


def _repeat_rows(prompts: tuple[jax.Array, jax.Array], count: int) -> tuple[jax.Array, jax.Array]:
    """The first ``count`` rows of the prompts tiled: (M, P) -> (count, P) ids and mask."""
    repeats = -(-count // prompts[0].shape[0])
    return tuple(jnp.tile(array, (repeats, 1))[:count] for array in prompts)


MOVIE_REVIEWS = "movie-reviews"  # ``prompts``: the paper's instruction + real snippet beginnings


def _movie_review_prompts(config: text_config.TextConfig, tokenizer: Any) -> tuple[list[str], list[str]]:
    """Training and evaluation prompt texts on disjoint movie-review snippets.

    ``prompt_count + eval_prompts`` snippets of the ``vader`` asset drawn with ``config.seed``,
    shuffled, each the chat template's turn "Generate a movie review." followed by the
    snippet's first ``prompt_words`` words (``prompts.movie_review_prompts``).
    """
    count = config.prompt_count + config.eval_prompts
    texts = prompts_lib.movie_review_prompts(
        tokenizer, num_words=config.prompt_words, count=count, seed=config.seed
    )
    texts = [texts[i] for i in np.random.default_rng(config.seed).permutation(count)]
    return texts[: config.prompt_count], texts[config.prompt_count :]


def _movie_review_arrays(texts: list[str], tokenizer: Any, length: int, header: Sequence[int]):
    """(N, P) left-padded ids and mask of whole prompts that each start with the chat header.

    Raises:
      ValueError: if a prompt needs more than ``length`` tokens or tokenizes its header otherwise.
    """
    rows = tokenizer(texts)["input_ids"]
    longest = max(len(row) for row in rows)
    if longest > length:
        raise ValueError(
            f"A movie-review prompt has {longest} tokens; raise prompt_length ({length}) so that the "
            "chat header and the first words fit."
        )
    for index, row in enumerate(rows):
        if list(row[: len(header)]) != list(header):
            raise ValueError(f"Prompt {index} does not start with the chat header's {len(header)} tokens.")
    return prompts_lib.pad_rows(rows, length, prompts_lib.pad_id_of(tokenizer), side="left")


def content_mask(mask: jax.Array, header_length: int) -> jax.Array:
    """(B, P) left-padded prompt mask with its first ``header_length`` tokens switched off."""
    start = mask.shape[1] - mask.sum(axis=1, keepdims=True)
    return mask * (jnp.arange(mask.shape[1])[None, :] >= start + header_length).astype(mask.dtype)


def loaded_policy(config: text_config.TextConfig) -> Policy:
    """A pre-trained causal LM (``config.model``: a local HF directory, or an ``rs_jax.assets``
    name such as ``"smollm2"``) with its own tokenizer; the rewards read its samples through the
    text bridge. Prompts: ``config.prompts`` is a file of prompts, or ``"movie-reviews"``: the
    chat template's "Generate a movie review." turn and the first words of a real snippet
    (evaluated on snippets that training never samples; the rewards skip the template's turn).

    Raises:
      ValueError: on a missing prompts file, a directory without a causal LM or a tokenizer.
    """
    if not config.prompts:
        raise ValueError(
            "--set model=… needs --set prompts=FILE: a JSONL file with a 'prompt' or 'text' field "
            f"per line, or a text file with one prompt per line; or prompts={MOVIE_REVIEWS}."
        )
    # Read a prompts file before loading a 7B model: fail fast.
    file_prompts = None if config.prompts == MOVIE_REVIEWS else prompts_lib.read_prompts(config.prompts)
    directory = assets.path(config.model) if config.model in assets.REGISTRY else config.model
    model, params = causal_lm.load_causal_lm(directory)
    tokenizer = tokenizer_bridge.load_tokenizer(directory)

    header_length = 0
    if file_prompts is None:
        header = tokenizer(prompts_lib.chat_header(tokenizer))["input_ids"]
        header_length = len(header)
        prompt_arrays, eval_arrays = (
            tuple(
                jnp.asarray(array)
                for array in _movie_review_arrays(texts, tokenizer, config.prompt_length, header)
            )
            for texts in _movie_review_prompts(config, tokenizer)
        )
    else:
        prompts = prompts_lib.tokenize_prompts(file_prompts, tokenizer, config.prompt_length)
        prompt_arrays = tuple(jnp.asarray(array) for array in prompts)
        eval_arrays = _repeat_rows(prompt_arrays, config.eval_prompts)
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
        eval_prompts=eval_arrays,
        eos_id=None if eos_id is None else int(eos_id),
        pad_id=prompts_lib.pad_id_of(tokenizer),
        decode=decode,
        header_length=header_length,
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
    apply_rewards: Callable, reward_params: Any, header_length: int, prompts, masks, tokens, response_mask
) -> jax.Array:
    """(B, C) reward components of the prompts with their responses (pads, after-EOS masked).

    Args:
      apply_rewards, reward_params: ``TextRewards.apply`` and ``TextRewards.params``.
      header_length: prompt tokens the rewards skip (``Policy.header_length``).
      prompts, masks: (B, P) prompt ids and mask; tokens, response_mask: (B, R) responses.
    """
    return apply_rewards(
        reward_params,
        jnp.concatenate([prompts, tokens], axis=1),
        jnp.concatenate([content_mask(masks, header_length), response_mask.astype(masks.dtype)], axis=1),
    )


def base_nll(learner: lm_ppo.LMPPOLearner, prompts, masks, tokens, response_mask) -> jax.Array:
    """(B,) mean negative log-likelihood per response token (nats) under the frozen base LM."""
    logits = causal_lm.sequence_outputs(
        learner.model, learner.base_params, prompts, masks, tokens, response_mask
    )[0]
    log_probs = causal_lm.response_log_probs(logits, tokens, response_mask)
    return -log_probs.sum(axis=1) / jnp.maximum(response_mask.sum(axis=1), 1)


def _evaluate_responses(
    learner: lm_ppo.LMPPOLearner, eval_prompts: tuple[jax.Array, jax.Array], lora_params, key
) -> jax.Array:
    """(E, C + 1): the rewards of the policy's sampled responses to the E evaluation prompts, then
    each response's ``base_nll`` (the fluency column of the report)."""
    sample = learner.generate(lora_params, *eval_prompts, key)
    rewards = learner.reward_components(*eval_prompts, sample.tokens, sample.mask)
    nll = base_nll(learner, *eval_prompts, sample.tokens, sample.mask)
    return jnp.concatenate([rewards, nll[:, None]], axis=1)


def _evaluate_mixture(
    learner: lm_ppo.LMPPOLearner, eval_prompts: tuple[jax.Array, jax.Array], stacked_lora, weights, key
) -> jax.Array:
    """(E, C + 1) like ``_evaluate_responses``, the responses decoded by MOD from the N experts
    base + LoRAᵢ at weights (N,): every token from softmax(Σᵢ wᵢ log pᵢ)."""
    sample = learner.generate_mixture(stacked_lora, weights, *eval_prompts, key)
    rewards = learner.reward_components(*eval_prompts, sample.tokens, sample.mask)
    nll = base_nll(learner, *eval_prompts, sample.tokens, sample.mask)
    return jnp.concatenate([rewards, nll[:, None]], axis=1)


def _responses(learner: lm_ppo.LMPPOLearner, prompts, masks, key, lora_params) -> tuple[jax.Array, jax.Array]:
    """(B, R) response tokens and mask of the policy with these LoRA params."""
    sample = learner.generate(lora_params, prompts, masks, key)
    return sample.tokens, sample.mask


def lora_config(config: text_config.TextConfig) -> lora.LoraConfig:
    return lora.LoraConfig(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_targets)


def _samples(
    config: text_config.TextConfig, policy: Policy, learner: lm_ppo.LMPPOLearner, outcome: pipeline.Outcome
) -> dict[str, Any]:
    """Generations for the first prompts at λ = 0, 0.25, …, 1 and the init; the soups are those of
    RS (``config.lora_mode``)."""
    trained = outcome.trained
    prompts, masks = (array[: config.sample_prompts] for array in policy.eval_prompts)
    generate = operands.jit(jax.tree_util.Partial(_responses, learner, prompts, masks, outcome.eval_key))
    settings, mode = lora_config(config), config.lora_mode
    # The init as a soup of itself (= the init), so every member has one shape: one compile.
    members = {"init": lora.interpolate_lora([trained.init] * 2, [0.5, 0.5], settings, mode=mode)}
    for lam in (0.0, 0.25, 0.5, 0.75, 1.0):
        members[f"λ={lam:g}"] = lora.interpolate_lora(trained.experts, [1.0 - lam, lam], settings, mode=mode)
    prompt_texts = policy.decode(np.asarray(prompts), np.asarray(content_mask(masks, policy.header_length)))
    texts = {}
    for label, lora_params in members.items():
        responses, response_masks = (np.asarray(array) for array in generate(lora_params))
        texts[label] = [
            f"{prompt} | {response}"
            for prompt, response in zip(prompt_texts, policy.decode(responses, response_masks))
        ]
    return {"reward_names": list(config.rewards), "samples": texts}


def _labels(symbol: str, weights: np.ndarray) -> list[str]:
    """``"λ=[0.3, 0.7]"`` for each (P, N) row of weights."""
    return [f"{symbol}={np.round(row, 2).tolist()}" for row in weights]


def _perplexities(evaluation: Evaluation, labels: Sequence[str], column: int) -> list[dict[str, Any]]:
    """Each point's base-model perplexity exp(mean NLL per token), from its (S,) NLL column."""
    rows = []
    for label, nll in zip(labels, evaluation.samples[:, :, column]):
        mean, stderr = float(nll.mean()), float(nll.std(ddof=1) / np.sqrt(len(nll)))
        rows.append({"point": label, "perplexity": math.exp(mean), "mean_nll": mean, "nll_stderr": stderr})
    return rows


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two (S,) columns; None when one is constant (undefined)."""
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _format(correlation: float | None) -> str:
    return "undefined (a constant reward)" if correlation is None else f"{correlation:.3f}"


def fluency_and_agreement(reward_names: Sequence[str], outcome: pipeline.Outcome) -> pipeline.Report:
    """The samples' perplexity under the frozen base at every point, and how the rewards agree.

    Perplexity: ``exp`` of the mean over evaluation samples of each response's mean NLL per
    token under the base LM (the rebuttal's fluency check: soups are no less fluent than
    their experts). Agreement: Pearson and Spearman correlations between the rewards over the
    init's own samples (two rewards that were one signal would give one expert, not a front).
    """
    column = len(reward_names)
    names = list(reward_names)
    points: dict[str, list[dict[str, Any]]] = {
        "init": _perplexities(outcome.init, ["init"], column),
        "runs": _perplexities(outcome.runs, _labels("μ", outcome.runs.weights), column),
        "rs": _perplexities(outcome.rs, _labels("λ", outcome.rs.weights), column),
    }
    for name, evaluation in outcome.extras.items():
        if evaluation.samples is not None and evaluation.samples.shape[2] > column:
            points[name] = _perplexities(evaluation, _labels("λ", evaluation.weights), column)
    init_rewards = outcome.init.samples[0, :, :column]
    ranks = np.argsort(np.argsort(init_rewards, axis=0), axis=0)
    agreement = {
        "pairs": [
            {
                "rewards": [names[i], names[j]],
                "pearson": _correlation(init_rewards[:, i], init_rewards[:, j]),
                "spearman": _correlation(ranks[:, i], ranks[:, j]),
            }
            for i in range(column)
            for j in range(i + 1, column)
        ],
        "samples": int(init_rewards.shape[0]),
    }
    lines = ["## Fluency: perplexity of each point's samples under the frozen base", ""]
    lines += ["| point | perplexity | mean NLL per token ± s.e. |", "|---|---|---|"]
    for family, rows in points.items():
        for row in rows:
            label = row["point"] if family in ("init", "runs", "rs") else f"{family} {row['point']}"
            lines.append(
                f"| {label} | {row['perplexity']:.2f} | {row['mean_nll']:.3f} ± {row['nll_stderr']:.3f} |"
            )
    lines += ["", f"Rewards over the init's {agreement['samples']} samples:", ""]
    lines += [
        f"- {a} vs {b}: Pearson {_format(pair['pearson'])}, Spearman {_format(pair['spearman'])}"
        for pair in agreement["pairs"]
        for a, b in [pair["rewards"]]
    ]
    return pipeline.Report(
        sections=["\n".join(lines)],
        results={"base_perplexity": points, "reward_agreement_at_init": agreement},
    )


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
                _score_responses, policy.rewards.apply, policy.rewards.params, policy.header_length
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
            mixtures=(
                {
                    pipeline.MOD: pipeline.DecodingMixture(
                        jax.tree_util.Partial(_evaluate_mixture, learner, policy.eval_prompts)
                    )
                }
                if config.decoding_mixing
                else None
            ),
            report=lambda outcome: dataclasses.replace(
                fluency_and_agreement(config.rewards, outcome),
                json_files={"samples.json": _samples(config, policy, learner, outcome)},
            ),
        )

    mus = np.array([[1.0 - mu, mu] for mu in config.morl_mus])
    return pipeline.Task.one_expert_per_reward(
        name="text",
        rewards=config.rewards,
        run_mus=mus,
        pretraining=policy.pretraining,
        finetuning=finetuning,
        config=config,
    )


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(argv, name="text", description=__doc__, configs=text_config, build=build)


if __name__ == "__main__":
    main()
