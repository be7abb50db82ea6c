"""Captioning: self-critical experts on caption metrics, their soups, model soups, ensembling, MORL.

    python -m tasks.captioning [--preset cpu|paper|smoke] [--out runs/captioning]
                               [--set key=value ...] [--resume]

Paper Appendix D: a captioner pre-trained by maximum likelihood is fine-tuned with
self-critical REINFORCE (5 sampled captions per image, mean-of-others baseline), one
expert per metric (BLEU1 and ROUGE-L by default; any of bleu1, bleu4, rouge, meteor,
cider with ``--set rewards=…``). Beside the rewarded soups θ(λ) the run reports MORL,
model soups of two seeds of one reward (rebuttal Fig. 4c), prediction ensembling of
the experts (the oracle of Lemma 4), MOD's decoding-time mixing of their log-probabilities
(``decoding_mixing``) and extrapolation λ ∉ [0, 1] (Fig. 10c), and draws
a few scenes with the caption of every λ under them (samples.png). See configs/captioning.py.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import captioning as captioning_config
from rs_jax import cli, pipeline, plots
from rs_jax.data import coco, scenes
from rs_jax.models import captioner
from rs_jax.rewards import text_metrics
from rs_jax.train import reinforce, supervised


@dataclasses.dataclass(frozen=True)
class CaptionData:
    """Where images and reference captions come from.

    Attributes:
      sample: (key, batch_size) -> (images (B, H, W, 3) in [0, 1], references (B, K, L) ids), jit-able.
      eval_images / eval_references: the fixed evaluation set, (S, H, W, 3) and (S, K, L).
      train_references: (N, K, L) references that define CIDEr-D's document frequencies.
      vocabulary: decodes token ids.
      eval_objects: the scene world's objects of the evaluation images (None on real data).
    """

    sample: Callable[[jax.Array, int], tuple[jax.Array, jax.Array]]
    eval_images: jax.Array
    eval_references: jax.Array
    train_references: np.ndarray
    vocabulary: Any
    eval_objects: scenes.SceneObjects | None = None


def scene_data(config: captioning_config.CaptioningConfig, eval_key: jax.Array) -> CaptionData:
    """The procedural scene world: fresh scenes at every update, a held-out set for evaluation."""
    scene_config = scenes.SceneConfig(image_size=config.image_size, caption_length=config.max_length)
    generate = jax.jit(scenes.sample_scenes, static_argnums=(1, 2))

    def sample(key, batch_size):
        drawn = scenes.sample_scenes(key, batch_size, scene_config)
        return drawn.images, drawn.captions

    held_out = generate(eval_key, config.eval_images, scene_config)
    df_scenes = generate(jax.random.fold_in(eval_key, 1), config.cider_reference_scenes, scene_config)
    return CaptionData(
        sample,
        held_out.images,
        held_out.captions,
        np.asarray(df_scenes.captions),
        scenes.scene_vocabulary(),
        held_out.objects,
    )


def coco_data(config: captioning_config.CaptioningConfig) -> CaptionData:
    """The Karpathy split of COCO from local files, loaded into memory (``max_images`` bounds it)."""
    split = coco.load_karpathy_arrays(
        config.data,
        config.image_dir,
        image_size=config.image_size,
        max_length=config.max_length,
        max_images=config.max_images or None,
    )
    train_images, train_references = jnp.asarray(split.train_images), jnp.asarray(split.train_captions)

    def sample(key, batch_size):
        rows = jax.random.randint(key, (batch_size,), 0, train_images.shape[0])
        return train_images[rows], train_references[rows]

    return CaptionData(
        sample,
        jnp.asarray(split.val_images[: config.eval_images]),
        jnp.asarray(split.val_captions[: config.eval_images]),
        np.asarray(split.train_captions),
        split.vocabulary,
    )


def strip_eos(tokens: jax.Array, eos_id: int, pad_id: int) -> jax.Array:
    """Token ids with EOS replaced by padding: metrics score words only."""
    return jnp.where(tokens == eos_id, pad_id, tokens)


def one_reference(references: jax.Array, key: jax.Array, pad_id: int) -> jax.Array:
    """(B, K, L) -> (B, L): one non-empty reference per image, uniformly at random."""
    present = references[:, :, 0] != pad_id
    choice = jax.random.categorical(key, jnp.where(present, 0.0, -jnp.inf))
    return jnp.take_along_axis(references, choice[:, None, None], axis=1)[:, 0]


def _greedy_rewards(
    model: Any, score: Callable, max_length: int, images: jax.Array, references: jax.Array, params, key
) -> jax.Array:
    """(S, R) rewards of the greedy captions of ``images`` (S, H, W, 3) against ``references``."""
    captions = captioner.sample_captions(
        model, params, images, key, max_length=max_length, greedy=True
    ).tokens
    return score(captions, references)


def _bernoulli(hits: jax.Array, trials: jax.Array) -> tuple[float, float]:
    """The rate of ``hits`` among ``trials`` (bool arrays of one shape) and its standard error."""
    count = max(int(trials.sum()), 1)
    rate = float((hits & trials).sum()) / count
    return rate, math.sqrt(rate * (1.0 - rate) / count)


def object_naming_quality(
    model: Any, max_length: int, images: jax.Array, objects: scenes.SceneObjects, params: Any, key: jax.Array
) -> dict[str, tuple[float, float]]:
    """How the greedy captions of scene-world ``images`` name their ``objects``: the share of the
    colour-shape pairs they write that are objects of the scene (``naming_precision``) and the share
    of the objects they name by colour and shape (``naming_recall``), each ± its standard error."""
    captions = captioner.sample_captions(
        model, params, images, key, max_length=max_length, greedy=True
    ).tokens
    naming = scenes.object_naming(captions, objects)
    return {
        "naming_precision": _bernoulli(naming.pair_right, naming.pair_named),
        "naming_recall": _bernoulli(naming.object_named, naming.present),
    }


def _mixture_rewards(
    model: Any,
    score: Callable,
    max_length: int,
    rule: str,
    images: jax.Array,
    references: jax.Array,
    stacked: Any,
    weights: jax.Array,
    key: jax.Array,
) -> jax.Array:
    """(S, R) rewards of the greedy captions decoded from the experts' mixture at ``weights`` (N,)."""
    captions = captioner.sample_captions_mixture(
        model, stacked, weights, images, key, rule=rule, max_length=max_length, greedy=True
    ).tokens
    return score(captions, references)


def _mixtures(
    config: captioning_config.CaptioningConfig, model: Any, score: Callable, data: CaptionData
) -> dict[str, pipeline.DecodingMixture]:
    """Prediction ensembling Σλᵢpᵢ (the oracle of Lemma 4) and, with ``decoding_mixing``, MOD's
    softmax(Σλᵢ log pᵢ): one sampler, two rules."""
    rules = {"prediction ensembling (N passes)": "probs"}
    if config.decoding_mixing:
        rules[pipeline.MOD] = "logits"
    return {
        name: pipeline.DecodingMixture(
            jax.tree_util.Partial(
                _mixture_rewards,
                model,
                score,
                config.max_length,
                rule,
                data.eval_images,
                data.eval_references,
            ),
            rule,
        )
        for name, rule in rules.items()
    }


def _model_soups(rewards: tuple[str, ...], trained: pipeline.TrainedRuns) -> dict[str, pipeline.SoupFamily]:
    """Model soups of the first two seeds of each reward, 5 points each (rebuttal Fig. 4c)."""
    families = {}
    lambdas = np.linspace(0.0, 1.0, 5)
    for reward_index, name in enumerate(rewards):
        seeds = [run for run, mu in enumerate(trained.mus) if np.isclose(mu[reward_index], 1.0)][:2]
        if len(seeds) < 2:
            continue
        member_weights = np.zeros((len(lambdas), len(trained.runs) + 1))
        member_weights[:, seeds[0]] = 1.0 - lambdas
        member_weights[:, seeds[1]] = lambdas
        families[f"model soup ({name}, 2 seeds)"] = pipeline.SoupFamily(
            np.stack([1.0 - lambdas, lambdas], axis=1), member_weights
        )
    return families


def _extrapolation(
    lambdas: tuple[float, ...], trained: pipeline.TrainedRuns
) -> dict[str, pipeline.SoupFamily]:
    """RS with λ outside [0, 1] (paper Fig. 10c), reported together with the RS grid."""
    if len(trained.expert_indices) != 2 or not lambdas:
        return {}
    weights = np.asarray(lambdas, np.float64)
    labels = np.stack([1.0 - weights, weights], axis=1)
    member_weights = np.zeros((len(weights), len(trained.runs) + 1))
    member_weights[:, trained.expert_indices] = labels
    return {"RS incl. extrapolation": pipeline.SoupFamily(labels, member_weights, with_rs=True)}


def build(config: captioning_config.CaptioningConfig) -> pipeline.Task:
    """The task's declaration: data, model, learners, rewards, runs and budget."""
    pipeline.check_rewards(config.rewards, text_metrics.REWARD_NAMES)
    pipeline.check_pretrains(config.budget, config.model, model="the captioner")
    _, _, eval_key = pipeline.phase_keys(config.seed)
    data = coco_data(config) if config.data else scene_data(config, jax.random.fold_in(eval_key, 7))
    pretrained = None
    if config.model:
        model, pretrained = captioner.load_captioner(config.model)
    else:
        model = captioner.tiny_captioner(
            data.vocabulary.size,
            image_size=config.image_size,
            patch_size=config.patch_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            max_length=config.max_length,
            bos_id=data.vocabulary.bos_id,
            eos_id=data.vocabulary.eos_id,
            pad_id=data.vocabulary.pad_id,
        )
    _, eos_id, pad_id = captioner.special_ids(model)
    stats = text_metrics.cider_document_frequencies(strip_eos(data.train_references, eos_id, pad_id))
    metric_fn = text_metrics.caption_rewards(config.rewards, stats)

    def score(captions, references):
        return metric_fn(strip_eos(captions, eos_id, pad_id), strip_eos(references, eos_id, pad_id))

    def pretrain_batch(key):
        data_key, reference_key = jax.random.split(key)
        images, references = data.sample(data_key, config.pretrain_batch)
        return {"images": images, "captions": one_reference(references, reference_key, pad_id)}

    pretrain_learner = supervised.SupervisedLearner(
        pretrain_batch,
        lambda params, batch, key: captioner.caption_loss(model, params, batch["images"], batch["captions"]),
    )

    def sample_inputs(key):
        images, references = data.sample(key, config.images_per_update)
        return {"images": images, "references": references}

    finetune_learner = reinforce.ReinforceLearner(
        sample_inputs=sample_inputs,
        sample_outputs=lambda params, inputs, key: (
            captioner.sample_captions(
                model, params, inputs["images"], key, max_length=config.max_length
            ).tokens
        ),
        log_prob=lambda params, inputs, outputs: captioner.token_log_probs(
            model, params, inputs["images"], outputs
        ).sum(axis=-1),
        reward_components=lambda inputs, outputs: score(outputs, inputs["references"]),
        num_samples=config.num_samples,
        baseline="others",
    )

    n_rewards = len(config.rewards)
    # Every seed trains the experts; MORL runs once (seed 0).
    experts = np.eye(n_rewards)
    morl_only = pipeline.experts_and_morl(n_rewards, config.morl_mus)[n_rewards:]
    run_mus = np.vstack([*[experts] * config.seeds_per_reward, morl_only])
    seed_of_run = [seed for seed in range(config.seeds_per_reward) for _ in range(n_rewards)]
    seed_of_run += [0] * len(morl_only)

    def report(outcome: pipeline.Outcome) -> pipeline.Report:
        members = pipeline.figure_soups(
            outcome.trained, config.rewards, (0.0, 0.5, 1.0, *config.extrapolation)
        )
        return pipeline.Report(
            figures={
                "samples.png": lambda path: _draw_samples(
                    path, config, model, data, members, outcome.eval_key
                )
            }
        )

    def finetuning(params, carry) -> pipeline.FineTuning:
        return pipeline.FineTuning(
            learner=finetune_learner,
            start=lambda key: (params, carry),
            evaluate=jax.tree_util.Partial(
                _greedy_rewards, model, score, config.max_length, data.eval_images, data.eval_references
            ),
            extra_soups=lambda trained: (
                _model_soups(config.rewards, trained) | _extrapolation(config.extrapolation, trained)
            ),
            mixtures=_mixtures(config, model, score, data),
            report=report,
        )

    return pipeline.Task.one_expert_per_reward(
        name="captioning",
        rewards=config.rewards,
        run_mus=run_mus,
        pretraining=pipeline.loaded_or_supervised(
            pretrained,
            pretrain_learner,
            lambda key: captioner.init_params(model, key),
            n_rewards,
            starting_point=config.starting_point,
            task_name="captioning",
        ),
        finetuning=finetuning,
        config=config,
        morl_runs=tuple(i for i, seed in enumerate(seed_of_run) if seed == 0),
        starting_quality=None
        if data.eval_objects is None
        else functools.partial(
            object_naming_quality, model, config.max_length, data.eval_images, data.eval_objects
        ),
    )


def _draw_samples(
    path: str,
    config: captioning_config.CaptioningConfig,
    model: Any,
    data: CaptionData,
    members: dict[str, Any],
    key: jax.Array,
) -> None:
    """The greedy captions of the first evaluation scenes per λ under their images."""
    count = min(config.figure_scenes, data.eval_images.shape[0])
    images = data.eval_images[:count]

    @jax.jit
    def greedy(params):
        return captioner.sample_captions(
            model, params, images, key, max_length=config.max_length, greedy=True
        ).tokens

    vocabulary = data.vocabulary
    texts = {
        label: [vocabulary.decode(row) for row in np.asarray(greedy(params))]
        for label, params in members.items()
    }
    texts["reference"] = [vocabulary.decode(row) for row in np.asarray(data.eval_references[:count, 0])]
    plots.plot_captioned_images(path, np.asarray(images), texts, title="Greedy captions per λ")


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(argv, name="captioning", description=__doc__, configs=captioning_config, build=build)


if __name__ == "__main__":
    main()
