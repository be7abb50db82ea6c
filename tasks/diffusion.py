"""Text-to-image: reward-weighted diffusion fine-tuning, one expert per image reward, their soups, MORL.

    python -m tasks.diffusion [--preset cpu|paper|smoke] [--out runs/diffusion]
                              [--set key=value ...] [--resume]

Paper Appendix E: the pre-trained model generates an offline set of images from the prompts (one
fixed noise key per prompt), a reward scores each image, the best 50% are kept, the kept rewards
are rescaled to min 0 and mean 1, and the model is fine-tuned on the reward-weighted noise
prediction loss L = E[r(x₀)·‖ε_θ(x_t, t, Q) − ε‖²] (Eq. 19), training only the UNet's
cross-attention layers and bias/scale parameters. One expert per reward, MORL on μ·R (before the
filtering), all runs vmapped as one program by ``rs_jax.experiment``. By default the rewards are
image statistics (colourfulness, brightness, and an "nsfw-like" skin-colour antagonist: Fig. 11);
``rewards=learned`` with ``scorer=…`` uses an MLP head on image features (the ava predictor's form).

Outputs beside the shared ones (results.json, front.png, spider.png, summary.md): quality.json and
quality.png (per λ, the Fréchet distance in a fixed random-feature space against scene images, and
the share of each prompt's objects that a classifier trained on the scene world finds in its sample,
``rs_jax.rewards.object_classifier``: rebuttal Fig. 2), samples.png (the same prompts and noise
drawn by the init, the soups and MORL: Fig. 12) and offline.json (the offline set's rewards and
each run's kept set). See configs/diffusion.py.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import diffusion as diffusion_config
from rs_jax import cli, experiment, pipeline, plots
from rs_jax.data import scenes
from rs_jax.models import diffusion
from rs_jax.rewards import images as image_rewards
from rs_jax.rewards import object_classifier, quality
from rs_jax.train import rwr, supervised


def scene_config(config: diffusion_config.DiffusionConfig) -> scenes.SceneConfig:
    """Scenes with just what this task reads: images and the captions up to the prompt's style."""
    minimal = scenes.reading_config(
        "captions",
        image_size=config.image_size,
        max_objects=config.max_objects,
        num_captions=config.prompt_style + 1,
    )
    return dataclasses.replace(minimal, caption_length=scenes.needed_lengths(minimal)["caption_length"])


def scene_prompts(drawn: scenes.Scenes, config: diffusion_config.DiffusionConfig) -> jax.Array:
    """(B, L) the prompt of each scene: its caption of style ``config.prompt_style``."""
    return drawn.captions[:, config.prompt_style]


@dataclasses.dataclass(frozen=True)
class Prompts:
    """A fixed prompt set: scene token ids, the text encoder's tokens and one noise key per prompt.

    Attributes:
      scene_tokens: (P, Ls) scene-vocabulary ids (for captions in figures).
      tokens / mask: (P, L) the text encoder's input.
      keys: (P, 2) raw PRNG keys of each prompt's initial noise.
    """

    scene_tokens: np.ndarray
    tokens: jax.Array
    mask: jax.Array
    keys: jax.Array

    def take(self, rows: slice) -> Prompts:
        return Prompts(self.scene_tokens[rows], self.tokens[rows], self.mask[rows], self.keys[rows])


def make_prompts(model: diffusion.DiffusionModel, scene_tokens: Any, noise_key: jax.Array) -> Prompts:
    """The prompt set of ``scene_tokens`` (P, Ls); prompt i's noise key is ``fold_in(noise_key, i)``."""
    scene_tokens = np.asarray(scene_tokens)
    tokens, mask = model.tokenize(scene_tokens)
    keys = diffusion.prompt_keys(noise_key, jnp.arange(len(scene_tokens)))
    return Prompts(scene_tokens, jnp.asarray(tokens), jnp.asarray(mask), keys)


def _run_mus(n_rewards: int, morl: bool) -> np.ndarray:
    """Experts (one-hot μ), then MORL at ½ of every pair and (N ≥ 3) at the uniform μ."""
    mus = list(np.eye(n_rewards))
    if morl:
        for i, j in itertools.combinations(range(n_rewards), 2):
            mu = np.zeros(n_rewards)
            mu[[i, j]] = 0.5
            mus.append(mu)
        if n_rewards >= 3:
            mus.append(np.full(n_rewards, 1.0 / n_rewards))
    return np.asarray(mus)


def _scorer(
    config: diffusion_config.DiffusionConfig, feature_key: jax.Array
) -> image_rewards.LearnedScorer | None:
    if image_rewards.LEARNED not in config.rewards:
        return None
    if not config.scorer:
        raise ValueError("The 'learned' reward needs --set scorer=<MLP head file> (save_mlp_head's format).")
    head = image_rewards.load_mlp_head(config.scorer)
    if config.scorer_features:
        features = image_rewards.clip_image_features(config.scorer_features)
    else:
        params = quality.random_feature_params(feature_key, head["layers"][0]["kernel"].shape[0])
        features = functools.partial(quality.random_features, params)
    return image_rewards.LearnedScorer(features, head)


def build(config: diffusion_config.DiffusionConfig) -> pipeline.Task:
    """The task's declaration: scenes, model, learners, rewards, runs and budgets."""
    if len(config.rewards) < 2:
        raise ValueError(
            f"rewards must name at least two of {image_rewards.REWARD_NAMES}; got {config.rewards}."
        )
    pipeline.check_pretrains(config.budget, config.model, directory="<Stable Diffusion dir>")
    if config.model and config.budget.pretrain_updates:
        raise ValueError(
            "A Stable Diffusion model is fine-tuned as given: set budget.pretrain_updates=0 with model=…."
        )
    if config.eval_prompts < 2 or config.reference_images < 2:
        raise ValueError(
            "eval_prompts and reference_images must be >= 2 (the Fréchet distance needs covariances)."
        )
    _, finetune_key, eval_key = pipeline.phase_keys(config.seed)
    scorer = _scorer(config, jax.random.fold_in(eval_key, 5))
    score = image_rewards.reward_components(config.rewards, scorer)
    world = scene_config(config)
    vocabulary = scenes.scene_vocabulary()
    if config.model:
        model, pretrained = diffusion.load_stable_diffusion(
            config.model, vocabulary.decode, image_size=config.image_size
        )
        shapes = pretrained
    else:
        model = diffusion.tiny_diffusion_model(
            vocabulary.size,
            prompt_length=world.caption_length,
            image_size=config.image_size,
            patch_size=config.patch_size,
            block_channels=config.block_channels,
            layers_per_block=config.layers_per_block,
            attention_heads=config.attention_heads,
            text_hidden_size=config.text_hidden_size,
            text_layers=config.text_layers,
            prediction_type=config.prediction_type,
            pad_id=vocabulary.pad_id,
            bos_id=vocabulary.bos_id,
            eos_id=vocabulary.eos_id,
        )
        pretrained = None
        shapes = diffusion.param_shapes(model)
    fraction = diffusion.trainable_fraction(shapes)
    print(
        f"diffusion: fine-tuning {100 * fraction:.1f}% of the parameters (UNet cross-attention + bias/scale)"
    )

    sample_scenes = jax.jit(scenes.sample_scenes, static_argnums=(1, 2))
    offline_scenes = sample_scenes(jax.random.fold_in(finetune_key, 1), config.offline_images, world)
    eval_scenes = sample_scenes(jax.random.fold_in(eval_key, 1), config.eval_prompts, world)
    reference = sample_scenes(jax.random.fold_in(eval_key, 3), config.reference_images, world).images
    offline_prompts = make_prompts(
        model, scene_prompts(offline_scenes, config), jax.random.fold_in(finetune_key, 2)
    )
    eval_prompts = make_prompts(model, scene_prompts(eval_scenes, config), jax.random.fold_in(eval_key, 2))
    feature_params = quality.random_feature_params(jax.random.fold_in(eval_key, 4), config.feature_dim)
    classifier = object_classifier.load(config.classifier)

    def pretrain_batch(key):
        drawn = scenes.sample_scenes(key, config.pretrain_batch, world)
        tokens = scene_prompts(drawn, config)
        return {
            "images": drawn.images,
            "tokens": tokens,
            "mask": (tokens != vocabulary.pad_id).astype(jnp.int32),
        }

    def pretrain_loss(params, batch, key):
        drop_key, loss_key = jax.random.split(key)
        tokens, mask = diffusion.drop_prompts(
            model, batch["tokens"], batch["mask"], config.uncond_probability, drop_key
        )
        samples = diffusion.images_to_samples(model, params, batch["images"])
        losses = diffusion.noise_prediction_loss(model, params, samples, tokens, mask, loss_key)
        return losses.mean(), {}

    pretrain_learner = supervised.SupervisedLearner(pretrain_batch, pretrain_loss)
    finetune_learner = rwr.RWRLearner(
        example_loss=lambda params, examples, key: diffusion.noise_prediction_loss(
            model, params, examples["samples"], examples["tokens"], examples["mask"], key
        ),
        batch_size=config.finetune_batch,
        keep_fraction=config.keep_fraction,
        standardize=config.standardize_rewards,
    )

    @jax.jit
    def generate(params, tokens, mask, keys):
        return diffusion.generate_images(
            model,
            params,
            tokens,
            mask,
            keys,
            num_steps=config.sampling_steps,
            guidance_scale=config.guidance_scale,
        )

    evaluate = jax.tree_util.Partial(
        _rewards_and_moments, generate, score, feature_params, classifier, eval_scenes.objects, eval_prompts
    )
    run_mus = _run_mus(len(config.rewards), config.morl)
    names = list(config.rewards)

    def finetuning(params, carry) -> pipeline.FineTuning:
        """RWR on the offline set the pre-trained params generate (once, before the runs start)."""
        del carry
        samples, images = _generate_in_batches(generate, params, offline_prompts, config.generation_batch)
        components = jnp.concatenate(
            [
                score(images[i : i + config.generation_batch])
                for i in range(0, len(images), config.generation_batch)
            ]
        )
        examples = {"samples": samples, "tokens": offline_prompts.tokens, "mask": offline_prompts.mask}
        offline = rwr.offline_set(examples, components)

        def report(outcome: pipeline.Outcome) -> pipeline.Report:
            quality_numbers, quality_section = _quality(config, fraction, outcome, reference_gaussian)
            comparisons, comparison_section = _pairwise_morl(names, outcome.rs, outcome.runs)
            offline_numbers = _offline_numbers(config, finetune_learner, components, outcome.trained.mus)
            members = _figure_members(outcome.trained, names)
            return pipeline.Report(
                sections=[quality_section, comparison_section],
                results={
                    "quality": quality_numbers,
                    "morl_vs_rs_pairs": comparisons,
                    "offline": offline_numbers,
                },
                json_files={"quality.json": quality_numbers, "offline.json": offline_numbers},
                figures={
                    "quality.png": lambda path: _draw_quality(path, quality_numbers),
                    "samples.png": lambda path: _draw_samples(
                        path, config, generate, score, eval_prompts, members
                    ),
                },
            )

        return pipeline.FineTuning(
            learner=finetune_learner,
            start=lambda key: (params, offline),
            evaluate=evaluate,
            optimizer=diffusion.masked_optimizer,
            report=report,
        )

    reference_gaussian = quality.gaussian_from_features(quality.random_features(feature_params, reference))

    def starting_quality(params, key) -> dict[str, tuple[float, float | None]]:
        """The objects drawn right and the Fréchet distance of ``params``' samples of the eval
        prompts (the task's own evaluation columns)."""
        samples = np.asarray(evaluate(params, key))[None]  # (1, S, R + 2 + F + F²)
        means, stderrs = experiment.mean_and_stderr(_object_columns(samples, len(names))[0])
        frechet = _frechet(reference_gaussian, samples, len(names))[0]
        return {
            **{name: (m, se) for name, m, se in zip(OBJECT_COLUMNS, means, stderrs)},
            "frechet_distance": (frechet, None),
        }

    return pipeline.Task.one_expert_per_reward(
        name="diffusion",
        rewards=names,
        run_mus=run_mus,
        pretraining=pipeline.loaded_or_supervised(
            pretrained,
            pretrain_learner,
            lambda key: diffusion.init_params(model, key),
            len(names),
            starting_point=config.starting_point,
            task_name="diffusion",
        ),
        finetuning=finetuning,
        config=config,
        starting_quality=starting_quality,
    )


def _generate_in_batches(generate, params, prompts: Prompts, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """``generate`` over the prompt set in batches of ``batch_size`` (the last one padded: one compile)."""
    count = prompts.tokens.shape[0]
    samples, images = [], []
    for start in range(0, count, batch_size):
        rows = np.minimum(np.arange(start, start + batch_size), count - 1)
        batch_samples, batch_images = generate(
            params, prompts.tokens[rows], prompts.mask[rows], prompts.keys[rows]
        )
        kept = min(batch_size, count - start)
        samples.append(batch_samples[:kept])
        images.append(batch_images[:kept])
    return jnp.concatenate(samples), jnp.concatenate(images)


# --------------------------------------------------------------------------- evaluation


OBJECT_COLUMNS = ("objects_found", "detections_right")  # of object_classifier.objects_found


def _rewards_and_moments(
    generate: Callable,
    score: Callable,
    feature_params: Any,
    classifier: Any,
    objects: scenes.SceneObjects,
    prompts: Prompts,
    params,
    key,
) -> jax.Array:
    """(S, R + 2 + F + F²): each eval image's rewards, the share of its prompt's objects the
    classifier finds in it and the share of its detections that are prompted (``OBJECT_COLUMNS``),
    then its feature moments (one sweep yields the rewards, the objects drawn right and the
    Fréchet distance of every λ). Fixed prompts and noise keys: ``key`` unused."""
    del key
    _, generated = generate(params, prompts.tokens, prompts.mask, prompts.keys)
    features = quality.random_features(feature_params, generated)
    return jnp.concatenate(
        [
            score(generated),
            object_classifier.objects_found(classifier, generated, objects),
            quality.feature_moments(features),
        ],
        axis=-1,
    )


def _object_columns(samples: np.ndarray, n_rewards: int) -> np.ndarray:
    """(P, S, 2) the ``OBJECT_COLUMNS`` of each point's images.

    Args:
      samples: (P, S, R + 2 + F + F²) per-image columns of ``_rewards_and_moments``.
    """
    return samples[..., n_rewards : n_rewards + len(OBJECT_COLUMNS)]


def _frechet(reference: tuple[np.ndarray, np.ndarray], samples: np.ndarray, n_rewards: int) -> list[float]:
    """Fréchet distance of each point's images to the reference Gaussian (mean, covariance).

    Args:
      samples: (P, S, R + 2 + F + F²) per-image columns of ``_rewards_and_moments``.
    """
    moments = samples[..., n_rewards + len(OBJECT_COLUMNS) :].mean(axis=1)
    return [
        quality.frechet_distance(*quality.gaussian_from_moments(row, samples.shape[1]), *reference)
        for row in moments
    ]


def _label(weights: np.ndarray) -> str:
    return "(" + ", ".join(f"{w:.2g}" for w in weights) + ")"


def _quality(
    config: diffusion_config.DiffusionConfig,
    trainable_fraction: float,
    outcome: pipeline.Outcome,
    reference: tuple[np.ndarray, np.ndarray],
) -> tuple[dict[str, Any], str]:
    """The rewards, objects drawn right and realism of every model: quality.json's numbers and a
    summary.md section."""
    names = list(config.rewards)
    n = len(names)

    def points(evaluation: experiment.Evaluation) -> list[tuple[np.ndarray, np.ndarray, float]]:
        return list(
            zip(
                evaluation.means,
                _object_columns(evaluation.samples, n).mean(axis=1),
                _frechet(reference, evaluation.samples, n),
            )
        )

    rows = [("pre-trained init", "init", *points(outcome.init)[0])]
    rows += [(f"RS λ={_label(w)}", "rs", *p) for w, p in zip(outcome.rs.weights, points(outcome.rs))]
    rows += [
        (
            ("expert " + names[int(np.argmax(mu))]) if np.isclose(mu.max(), 1.0) else f"MORL μ={_label(mu)}",
            "morl",
            *p,
        )
        for mu, p in zip(outcome.runs.weights, points(outcome.runs))
    ]
    numbers = {
        "metric": f"Fréchet distance in a fixed random-feature space ({config.feature_dim} features) of "
        f"{config.eval_prompts} samples vs {config.reference_images} scene images (lower is more realistic); "
        "objects_found: the share of each prompt's objects that rs_jax.rewards.object_classifier "
        "finds in its sample, detections_right: the share of its detections that the prompt names",
        "trainable_fraction": trainable_fraction,
        "points": [
            {
                "label": label,
                "family": family,
                "frechet_distance": d,
                **dict(zip(OBJECT_COLUMNS, map(float, found))),
                "rewards": dict(zip(names, map(float, m))),
            }
            for label, family, m, found, d in rows
        ],
    }
    lines = [
        "## Rewards, objects drawn right and realism per model",
        "",
        f"Fine-tuned parameters: {100 * trainable_fraction:.1f}% (UNet cross-attention + bias/scale).",
        "Objects found: the share of each prompt's objects the scene-world classifier finds in its",
        "sample; detections right: the share of its detections that the prompt names.",
        "",
        "| model | " + " | ".join(names) + " | objects found ↑ | detections right ↑ | Fréchet distance ↓ |",
        "|---" * (n + 4) + "|",
    ]
    lines += [
        f"| {label} | "
        + " | ".join(f"{v:.4f}" for v in means)
        + f" | {found[0]:.3f} | {found[1]:.3f} | {d:.4g} |"
        for label, _, means, found, d in rows
    ]
    return numbers, "\n".join(lines)


def _draw_quality(path: str, numbers: dict[str, Any]) -> None:
    colours = {"init": "tab:gray", "rs": "tab:blue", "morl": "tab:red"}
    points = numbers["points"]
    plots.plot_bars(
        path,
        [point["label"] for point in points],
        [point["frechet_distance"] for point in points],
        ylabel="Fréchet distance to scene images ↓",
        colors=[colours[point["family"]] for point in points],
        title="Realism per model: init (grey), rewarded soups (blue), experts and MORL (red)",
    )


def _pairwise_morl(
    names: list[str], rs: experiment.Evaluation, runs: experiment.Evaluation
) -> tuple[list[dict[str, Any]], str]:
    """For every MORL run at μ = ½ of a pair (i, j): its ½(R_i + R_j) against the best RS soup on the
    edge between experts i and j, and whether an RS soup of that edge dominates it (Fig. 11)."""
    comparisons = []
    for mu, morl_means in zip(runs.weights, runs.means):
        pair = np.flatnonzero(mu > 0)
        if len(pair) != 2:
            continue
        i, j = pair
        on_edge = np.isclose(rs.weights[:, i] + rs.weights[:, j], 1.0)
        edge = rs.means[on_edge][:, [i, j]]
        rs_scores = edge @ mu[[i, j]]
        best = int(np.argmax(rs_scores))
        comparisons.append(
            {
                "pair": [names[i], names[j]],
                "morl_score": float(morl_means[[i, j]] @ mu[[i, j]]),
                "best_rs_score": float(rs_scores[best]),
                "best_rs_lambda": rs.weights[on_edge][best].tolist(),
                "rs_dominates_morl": bool(np.any(np.all(edge >= morl_means[[i, j]], axis=1))),
            }
        )
    if not comparisons:
        return comparisons, ""
    lines = [
        "## MORL at μ = ½ of a pair vs the soups of that pair's experts",
        "",
        "| pair | MORL ½(Rᵢ+Rⱼ) | best RS ½(Rᵢ+Rⱼ) on the edge | an RS soup dominates MORL |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {' + '.join(c['pair'])} | {c['morl_score']:.4f} | {c['best_rs_score']:.4f} | "
        f"{'yes' if c['rs_dominates_morl'] else 'no'} |"
        for c in comparisons
    ]
    return comparisons, "\n".join(lines)


def _offline_numbers(
    config: diffusion_config.DiffusionConfig, learner: rwr.RWRLearner, components: jax.Array, mus: np.ndarray
) -> dict[str, Any]:
    """The offline set's mean rewards and the mean rewards of each run's kept half."""
    runs = []
    for mu in mus:
        kept, _ = rwr.filter_and_rescale(
            learner.scalarized(components, jnp.asarray(mu, jnp.float32)), config.keep_fraction
        )
        runs.append(
            {
                "mu": mu.tolist(),
                "kept_mean": dict(zip(config.rewards, np.asarray(components[kept].mean(0)).tolist())),
            }
        )
    return {
        "images": int(components.shape[0]),
        "keep_fraction": config.keep_fraction,
        "mean": dict(zip(config.rewards, np.asarray(components.mean(0)).tolist())),
        "std": dict(zip(config.rewards, np.asarray(components.std(0)).tolist())),
        "correlation": np.corrcoef(np.asarray(components).T).tolist(),
        "runs": runs,
    }


def _figure_members(trained: pipeline.TrainedRuns, names: list[str]) -> dict[str, Any]:
    """The init, the soups between the first two experts, the other experts, the uniform soup and
    the uniform MORL run (paper Fig. 12)."""
    members = pipeline.figure_soups(trained, names, (0.0, 0.25, 0.5, 0.75, 1.0))
    uniform = [i for i, mu in enumerate(trained.mus) if np.allclose(mu, 1.0 / len(names))]
    if uniform:
        members["MORL uniform μ"] = trained.runs[uniform[0]]
    return members


def _draw_samples(
    path: str,
    config: diffusion_config.DiffusionConfig,
    generate: Callable,
    score: Callable,
    eval_prompts: Prompts,
    members: dict[str, Any],
) -> None:
    """The same prompts and noise drawn by each member, one row per member."""
    names = list(config.rewards)
    prompts = eval_prompts.take(slice(0, min(config.figure_prompts, eval_prompts.tokens.shape[0])))
    rows, notes = [], []
    for params in members.values():
        _, generated = generate(params, prompts.tokens, prompts.mask, prompts.keys)
        rows.append(np.asarray(generated))
        scores = np.asarray(score(generated)).mean(axis=0)
        notes.append(" ".join(f"{name[:4]} {value:.2f}" for name, value in zip(names, scores)))
    vocabulary = scenes.scene_vocabulary()
    plots.plot_image_grid(
        path,
        np.stack(rows),
        list(members),
        column_titles=[vocabulary.decode(row) for row in prompts.scene_tokens],
        row_notes=notes,
        title="Same prompt and noise per column; rows: init, soups θ(λ), experts, MORL (row: mean rewards)",
    )


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(argv, name="diffusion", description=__doc__, configs=diffusion_config, build=build)


if __name__ == "__main__":
    main()
