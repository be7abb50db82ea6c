"""Captioning: self-critical experts on caption metrics, their soups, model soups, ensembling, MORL.

    python -m tasks.captioning [--preset cpu|paper|smoke] [--out runs/captioning]
                               [--set key=value ...] [--resume]

Paper Appendix D: a captioner pre-trained by maximum likelihood is fine-tuned with
self-critical REINFORCE (5 sampled captions per image, mean-of-others baseline), one
expert per metric (BLEU1 and ROUGE-L by default; any of bleu1, bleu4, rouge, meteor,
cider with ``--set rewards=…``). Beside the rewarded soups θ(λ) the run reports MORL,
model soups of two seeds of one reward (rebuttal Fig. 4c), prediction ensembling of
the experts (the oracle of Lemma 4) and extrapolation λ ∉ [0, 1] (Fig. 10c), and draws
a few scenes with the caption of every λ under them (samples.png). See configs/captioning.py.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import captioning as captioning_config
from rs_jax import cli, experiment, plots, soup
from rs_jax import config as config_lib
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
    """

    sample: Callable[[jax.Array, int], tuple[jax.Array, jax.Array]]
    eval_images: jax.Array
    eval_references: jax.Array
    train_references: np.ndarray
    vocabulary: Any


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


@dataclasses.dataclass(frozen=True)
class Captioning:
    """Everything ``main`` needs: the RL declaration, budget, model, data and reward function."""

    spec: experiment.RLExperiment
    budget: experiment.Budget
    model: Any
    data: CaptionData
    score: Callable[[jax.Array, jax.Array], jax.Array]
    seed_of_run: list[int]


def build(config: captioning_config.CaptioningConfig) -> Captioning:
    """The task's declaration: data, model, learners, rewards, runs and budgets."""
    unknown = [name for name in config.rewards if name not in text_metrics.REWARD_NAMES]
    if len(config.rewards) < 2 or unknown:
        raise ValueError(
            f"rewards must name at least two of {', '.join(text_metrics.REWARD_NAMES)}; got "
            f"{list(config.rewards)}" + (f" (unknown: {unknown})." if unknown else ".")
        )
    if config.pretrain_updates == 0 and not config.model:
        raise ValueError(
            "Nothing pre-trains the captioner: give --set model=<HF directory> or pretrain_updates>0."
        )
    _, _, eval_key = experiment.phase_keys(config.seed)
    data = coco_data(config) if config.data else scene_data(config, jax.random.fold_in(eval_key, 7))
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
        pretrained = None
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
    experts = np.eye(n_rewards)
    morl_mus = (
        [np.array([1.0 - mu, mu]) for mu in config.morl_mus]
        if n_rewards == 2
        else [np.full(n_rewards, 1.0 / n_rewards)]
    )
    run_mus, seed_of_run = [], []
    for seed_index in range(config.seeds_per_reward):
        run_mus += list(experts)
        seed_of_run += [seed_index] * n_rewards
    morl_only = [mu for mu in morl_mus if not np.any(np.all(np.isclose(experts, mu), axis=1))]
    run_mus += morl_only
    seed_of_run += [0] * len(morl_only)

    def evaluate(params, carry, key):
        del carry
        captions = captioner.sample_captions(
            model, params, data.eval_images, key, max_length=config.max_length, greedy=True
        ).tokens
        return score(captions, data.eval_references)

    spec = experiment.RLExperiment(
        reward_names=tuple(config.rewards),
        expert_names=tuple(config.rewards),
        pretrain_learner=pretrain_learner,
        finetune_learner=finetune_learner,
        init_params=(
            (lambda key: captioner.init_params(model, key))
            if pretrained is None
            else (lambda key: pretrained)
        ),
        init_carry=lambda learner, key: None,
        finetune_start=lambda params, carry, key: (params, carry),
        soup_part=lambda params: params,
        evaluate=evaluate,
        pretrain_weights=np.zeros(n_rewards),
        run_weights=np.asarray(run_mus),
        run_mus=np.asarray(run_mus),
    )

    budget = experiment.Budget.from_config(config)
    return Captioning(spec, budget, model, data, score, seed_of_run)


def _extra_soups(
    config: captioning_config.CaptioningConfig, task: Captioning, trained: experiment.TrainedRuns
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model soups of the seeds of each reward and the extrapolated RS points, as member weights."""
    n_members = len(trained.runs) + 1
    extras = {}
    mus = trained.mus
    for reward_index, name in enumerate(config.rewards):
        seeds = [run for run in range(len(trained.runs)) if np.isclose(mus[run, reward_index], 1.0)][:2]
        if len(seeds) < 2:
            continue
        lambdas = np.linspace(0.0, 1.0, 5)
        member_weights = np.zeros((len(lambdas), n_members))
        member_weights[:, seeds[0]] = 1.0 - lambdas
        member_weights[:, seeds[1]] = lambdas
        extras[f"model soup ({name}, 2 seeds)"] = (np.stack([1.0 - lambdas, lambdas], axis=1), member_weights)
    if len(config.rewards) == 2 and config.extrapolation:
        lambdas = np.asarray(config.extrapolation, np.float64)
        labels = np.stack([1.0 - lambdas, lambdas], axis=1)
        member_weights = np.zeros((len(lambdas), n_members))
        member_weights[:, trained.expert_indices] = labels
        extras["extrapolation"] = (labels, member_weights)
    return extras


def _ensemble_evaluation(
    config: captioning_config.CaptioningConfig, task: Captioning, experts: list[Any], grid: np.ndarray, key
) -> experiment.Evaluation:
    """Prediction ensembling Σλᵢpᵢ of the experts at every λ of the RS grid (one compile)."""
    stacked = soup.stack_experts(experts)

    # Params and images are arguments, not closed-over constants: XLA would constant-fold the
    # experts' encoder over the evaluation images at compile time.
    @jax.jit
    def ensemble_rewards(stacked, images, lambdas):
        captions = captioner.sample_captions_ensemble(
            task.model, stacked, lambdas, images, key, max_length=config.max_length
        ).tokens
        return task.score(captions, task.data.eval_references)

    samples = np.stack(
        [
            np.asarray(ensemble_rewards(stacked, task.data.eval_images, jnp.asarray(row, jnp.float32)))
            for row in grid
        ]
    )
    return experiment.Evaluation.from_samples(grid, samples)


def _write_samples(
    run_dir: str, config: captioning_config.CaptioningConfig, task: Captioning, members: dict[str, Any], key
) -> None:
    """samples.png with the greedy captions of the first evaluation scenes per λ (and samples.json)."""
    count = min(config.figure_scenes, task.data.eval_images.shape[0])
    images = task.data.eval_images[:count]

    @jax.jit
    def greedy(params):
        return captioner.sample_captions(
            task.model, params, images, key, max_length=config.max_length, greedy=True
        ).tokens

    vocabulary = task.data.vocabulary
    texts = {
        label: [vocabulary.decode(row) for row in np.asarray(greedy(params))]
        for label, params in members.items()
    }
    texts["reference"] = [vocabulary.decode(row) for row in np.asarray(task.data.eval_references[:count, 0])]
    plots.plot_captioned_images(
        os.path.join(run_dir, "samples.png"), np.asarray(images), texts, title="Greedy captions per λ"
    )


def run(
    run_dir: str, config: captioning_config.CaptioningConfig, *, resume: bool = False, shard: bool = False
) -> dict[str, Any]:
    """The whole experiment; writes the run directory and returns the summary numbers."""
    task = build(config)
    run_config = config_lib.to_dict(config)
    trained = experiment.train_runs(
        run_dir, task.spec, task.budget, config=run_config, resume=resume, shard=shard
    )
    _, _, eval_key = experiment.phase_keys(config.seed)

    def eval_fn(params):
        return task.spec.evaluate(params, None, eval_key)

    extras_spec = _extra_soups(config, task, trained)
    rs, runs, init, extras = experiment.evaluate_runs(trained, eval_fn, config.rs_points, extras_spec)
    seed0 = [i for i, seed in enumerate(task.seed_of_run) if seed == 0]
    morl = experiment.Evaluation(runs.weights[seed0], runs.means[seed0], runs.stderrs[seed0])
    if "extrapolation" in extras:
        extrapolated = extras.pop("extrapolation")
        extras["RS incl. extrapolation"] = _sorted_by_lambda(rs, extrapolated)
    experts = [trained.runs[index] for index in trained.expert_indices]
    extras["prediction ensembling (N passes)"] = _ensemble_evaluation(
        config, task, experts, rs.weights, eval_key
    )
    summary = experiment.write_results(
        run_dir,
        reward_names=task.spec.reward_names,
        expert_names=task.spec.expert_names,
        rs=rs,
        morl=morl,
        init=init,
        extra_soups=extras,
        config=run_config,
        lmc_tolerance=2.0 * float(rs.stderrs.max()),
    )
    _write_samples(
        run_dir,
        config,
        task,
        experiment.figure_soups(trained, config.rewards, (0.0, 0.5, 1.0, *config.extrapolation)),
        eval_key,
    )
    return summary


def _sorted_by_lambda(rs: experiment.Evaluation, extra: experiment.Evaluation) -> experiment.Evaluation:
    """RS points and extrapolated points together, ordered by the last expert's λ (2 experts)."""
    weights = np.vstack([rs.weights, extra.weights])
    order = np.argsort(weights[:, -1], kind="stable")
    return experiment.Evaluation(
        weights[order],
        np.vstack([rs.means, extra.means])[order],
        np.vstack([rs.stderrs, extra.stderrs])[order],
    )


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(
        argv,
        prog="python -m tasks.captioning",
        description=__doc__,
        configs=captioning_config,
        run=run,
        default_out="runs/captioning",
    )


if __name__ == "__main__":
    main()
