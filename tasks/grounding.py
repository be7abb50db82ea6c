"""Visual grounding: one expert per object size, their rewarded soups over the simplex, MORL.

    python -m tasks.grounding [--preset cpu|paper|smoke] [--out runs/grounding]
                              [--set key=value ...] [--resume]

Paper Appendix F (Fig. 5c / 14): a unified encoder-decoder reads an image and a referring
expression and emits the target's box as 4 location tokens (1000 bins on the 1000×1000
grid). After pre-training by cross-entropy (CE) on the true box tokens, three experts are
fine-tuned with CE + 5 × self-critical REINFORCE, each rewarded with IoU > 0.5 only on
objects of one size: small (< 30 000 grid px²), medium (< 100 000), large. MORL trains
once more at the uniform weighting. Every point (the 15 soups of a 5-point simplex grid,
the runs, the init) is scored by its accuracy (IoU > 0.5) on each size bucket of a held-out
set: results.json, spider.png, and boxes.png with the true (green) and predicted (red) boxes
of each expert and of the uniform soup. See configs/grounding.py.

Evaluation: per-sample reward k is 1[IoU > 0.5] · 1[bucket = k] / (fraction of the
evaluation set in bucket k), so its mean over the set is exactly the accuracy on bucket k
(the scene world's evaluation set is balanced, one third per bucket); the standard errors
computed from these rows slightly overestimate the per-bucket ones.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import grounding as grounding_config
from rs_jax import cli, experiment, plots, soup
from rs_jax import config as config_lib
from rs_jax.data import refcoco, scenes
from rs_jax.data.vocab import Vocabulary
from rs_jax.models import backbones
from rs_jax.rewards import boxes
from rs_jax.train import reinforce, supervised

OUTPUT_LENGTH = 4  # x0 y0 x1 y1


@dataclasses.dataclass(frozen=True)
class GroundingData:
    """Where images, referring expressions and target boxes come from.

    Attributes:
      sample: (key, batch_size) -> {"images" (B, H, W, 3), "prompts" (B, Lp), "boxes" (B, 4)}, jit-able.
      eval_set: the same dict for the fixed evaluation set (S rows).
      eval_fractions: (3,) fraction of the evaluation set in each size bucket (all > 0).
      vocabulary: words then ``num_bins`` location tokens.
      first_location_id: id of ``<loc_0>``.
    """

    sample: Callable[[jax.Array, int], dict[str, jax.Array]]
    eval_set: dict[str, jax.Array]
    eval_fractions: np.ndarray
    vocabulary: Vocabulary
    first_location_id: int


def _bucket_fractions(target_boxes: Any) -> np.ndarray:
    buckets = np.asarray(boxes.size_bucket(jnp.asarray(target_boxes)))
    fractions = np.bincount(buckets, minlength=len(boxes.SIZE_BUCKETS)) / max(len(buckets), 1)
    empty = [name for name, fraction in zip(boxes.SIZE_BUCKETS, fractions) if fraction == 0]
    if empty:
        raise ValueError(f"The evaluation set has no {' or '.join(empty)} objects; use a bigger one.")
    return fractions


def _take_slot(array: jax.Array, slot: jax.Array) -> jax.Array:
    """(B, M, ...) -> (B, ...): row b's slot ``slot[b]``."""
    index = slot.reshape((-1,) + (1,) * (array.ndim - 1))
    return jnp.take_along_axis(array, index, axis=1)[:, 0]


def scene_data(config: grounding_config.GroundingConfig, eval_key: jax.Array) -> GroundingData:
    """The scene world: one random object of each fresh scene per row; a held-out set balanced over
    the three size buckets."""
    scene_config = scenes.SceneConfig(  # texts other than referring expressions kept minimal: faster compile
        image_size=config.image_size,
        max_objects=config.max_objects,
        referring_length=config.prompt_length,
        num_captions=1,
        caption_length=2,
        num_questions=1,
        question_length=2,
        num_answers=1,
        answer_length=2,
    )
    vocabulary, first_location_id = boxes.with_location_tokens(scenes.scene_vocabulary(), config.num_bins)

    def sample(key, batch_size):
        scene_key, slot_key = jax.random.split(key)
        drawn = scenes.sample_scenes(scene_key, batch_size, scene_config)
        slot = jax.random.categorical(slot_key, jnp.where(drawn.referring_valid, 0.0, -jnp.inf))
        return {
            "images": drawn.images,
            "prompts": _take_slot(drawn.referring, slot),
            "boxes": _take_slot(drawn.boxes, slot),
        }

    per_bucket = max(config.eval_objects // len(boxes.SIZE_BUCKETS), 1)
    pool = jax.jit(scenes.sample_scenes, static_argnums=(1, 2))(eval_key, 6 * per_bucket + 64, scene_config)
    valid = np.asarray(pool.referring_valid)
    buckets = np.asarray(boxes.size_bucket(pool.boxes))
    chosen = []  # (scene, slot) pairs: the first per_bucket objects of each bucket, in scene order
    for bucket in range(len(boxes.SIZE_BUCKETS)):
        scene_index, slot_index = np.nonzero(valid & (buckets == bucket))
        if len(scene_index) < per_bucket:
            raise ValueError(f"Too few {boxes.SIZE_BUCKETS[bucket]} objects drawn for the evaluation set.")
        chosen += list(zip(scene_index[:per_bucket], slot_index[:per_bucket]))
    chosen.sort()
    scene_rows = np.array([scene for scene, _ in chosen])
    slot_rows = np.array([slot for _, slot in chosen])
    eval_set = {
        "images": pool.images[scene_rows],
        "prompts": pool.referring[scene_rows, slot_rows],
        "boxes": pool.boxes[scene_rows, slot_rows],
    }
    return GroundingData(
        sample, eval_set, _bucket_fractions(eval_set["boxes"]), vocabulary, first_location_id
    )


def refcoco_data(config: grounding_config.GroundingConfig) -> GroundingData:
    """RefCOCO(+/g) from local files, loaded into memory (``max_expressions`` bounds it)."""
    if not config.instances:
        raise ValueError("refs= needs instances= (the dataset's instances.json) too.")
    words, train, held_out = refcoco.load_refcoco_arrays(
        config.refs,
        config.instances,
        config.image_dir or None,
        image_size=config.image_size,
        max_length=config.prompt_length,
        train_split=config.train_split,
        eval_split=config.eval_split,
        max_expressions=config.max_expressions or None,
    )
    vocabulary, first_location_id = boxes.with_location_tokens(words, config.num_bins)
    images, image_index = jnp.asarray(train.images), jnp.asarray(train.image_index)
    prompts, targets = jnp.asarray(train.expressions), jnp.asarray(train.boxes)

    def sample(key, batch_size):
        rows = jax.random.randint(key, (batch_size,), 0, prompts.shape[0])
        return {"images": images[image_index[rows]], "prompts": prompts[rows], "boxes": targets[rows]}

    count = config.eval_objects or len(held_out.boxes)
    eval_set = {
        "images": jnp.asarray(held_out.images[held_out.image_index[:count]]),
        "prompts": jnp.asarray(held_out.expressions[:count]),
        "boxes": jnp.asarray(held_out.boxes[:count]),
    }
    return GroundingData(
        sample, eval_set, _bucket_fractions(eval_set["boxes"]), vocabulary, first_location_id
    )


@dataclasses.dataclass(frozen=True)
class Grounding:
    """Everything ``run`` needs: the RL declaration, budget, model, data and greedy predictor."""

    spec: experiment.RLExperiment
    budget: experiment.Budget
    model: Any
    data: GroundingData
    predict: Callable[[Any, dict[str, jax.Array]], jax.Array]


def build(config: grounding_config.GroundingConfig) -> Grounding:
    """The task's declaration: data, model, learners, rewards, runs and budgets."""
    if config.pretrain_updates == 0 and not config.model:
        raise ValueError(
            "Nothing pre-trains the model: give --set model=<HF directory> or pretrain_updates>0."
        )
    _, _, eval_key = experiment.phase_keys(config.seed)
    data = refcoco_data(config) if config.refs else scene_data(config, jax.random.fold_in(eval_key, 7))
    first, num_bins = data.first_location_id, config.num_bins
    backbone, model, pretrained = backbones.build_model(
        config, data.vocabulary, prompt_length=config.prompt_length, output_length=OUTPUT_LENGTH
    )
    location_only = boxes.location_mask(data.vocabulary.size, first, num_bins)

    def cross_entropy(params, batch):
        targets = boxes.boxes_to_location_tokens(batch["boxes"], first, num_bins)
        return backbone.location_cross_entropy(
            model,
            params,
            batch["images"],
            batch["prompts"],
            targets,
            first_location_id=first,
            num_bins=num_bins,
            sigma=config.location_sigma,
        )

    def sample_boxes(params, batch, key, greedy=False):
        return backbone.sample_outputs(
            model,
            params,
            batch["images"],
            batch["prompts"],
            key,
            max_length=OUTPUT_LENGTH,
            allowed=location_only,
            stop_at_eos=False,
            greedy=greedy,
        ).tokens

    pretrain_learner = supervised.SupervisedLearner(
        lambda key: data.sample(key, config.pretrain_batch),
        lambda params, batch, key: cross_entropy(params, batch),
    )
    finetune_learner = reinforce.ReinforceLearner(
        sample_inputs=lambda key: data.sample(key, config.images_per_update),
        sample_outputs=sample_boxes,
        log_prob=lambda params, inputs, outputs: backbone.token_log_probs(
            model, params, inputs["images"], inputs["prompts"], outputs, location_only
        ).sum(axis=-1),
        reward_components=lambda inputs, outputs: boxes.size_rewards(
            boxes.location_tokens_to_boxes(outputs, first, num_bins), inputs["boxes"], config.iou_threshold
        ),
        num_samples=config.num_samples,
        baseline="others",
        # The minibatch holds each input K times, shuffled: every K-th row is an unbiased sample
        # of the inputs for the cross-entropy, at 1/K of the cost.
        supervised_loss=lambda params, inputs: cross_entropy(
            params, jax.tree.map(lambda leaf: leaf[:: config.num_samples], inputs)
        )[0],
        supervised_weight=config.supervised_weight,
        policy_weight=config.policy_weight,
    )

    n_buckets = len(boxes.SIZE_BUCKETS)
    run_mus = [*np.eye(n_buckets)] + ([np.full(n_buckets, 1.0 / n_buckets)] if config.morl else [])
    eval_buckets = jax.nn.one_hot(boxes.size_bucket(data.eval_set["boxes"]), n_buckets)
    scale = jnp.asarray(1.0 / data.eval_fractions, jnp.float32)

    def predict(params, batch):
        tokens = sample_boxes(params, batch, jax.random.PRNGKey(0), greedy=True)
        return boxes.location_tokens_to_boxes(tokens, first, num_bins)

    def evaluate(params, carry, key):
        del carry, key  # greedy decoding
        predicted = predict(params, data.eval_set)
        hits = boxes.grounding_hits(predicted, data.eval_set["boxes"], config.iou_threshold)
        return hits[:, None] * eval_buckets * scale[None, :]

    spec = experiment.RLExperiment(
        reward_names=boxes.SIZE_BUCKETS,
        expert_names=boxes.SIZE_BUCKETS,
        pretrain_learner=pretrain_learner,
        finetune_learner=finetune_learner,
        init_params=(
            (lambda key: backbone.init_params(model, key, first_location_id=first, num_bins=num_bins))
            if pretrained is None
            else (lambda key: pretrained)
        ),
        init_carry=lambda learner, key: None,
        finetune_start=lambda params, carry, key: (params, carry),
        soup_part=lambda params: params,
        evaluate=evaluate,
        pretrain_weights=np.zeros(n_buckets),
        run_weights=np.asarray(run_mus),
        run_mus=np.asarray(run_mus),
    )

    budget = experiment.Budget.from_config(config)
    return Grounding(spec, budget, model, data, predict)


def _figure_rows(count: int, eval_boxes: np.ndarray) -> np.ndarray:
    """Evaluation rows for the figure: as many of each size bucket as fit, in bucket order."""
    buckets = np.asarray(boxes.size_bucket(jnp.asarray(eval_boxes)))
    per_bucket = [np.flatnonzero(buckets == bucket) for bucket in range(len(boxes.SIZE_BUCKETS))]
    rows = [
        row for position in range(count) for row in [r[position] for r in per_bucket if position < len(r)]
    ]
    return np.sort(np.array(rows[:count]))


def _figure_members(
    trained: experiment.TrainedRuns, config: grounding_config.GroundingConfig
) -> dict[str, Any]:
    experts = [trained.runs[index] for index in trained.expert_indices]
    members = {"init": trained.init}
    members |= {f"expert {name}": expert for name, expert in zip(boxes.SIZE_BUCKETS, experts)}
    members["uniform soup"] = soup.interpolate(experts, np.full(len(experts), 1.0 / len(experts)))
    if config.morl:
        members["MORL uniform μ"] = trained.runs[-1]
    return members


def _write_boxes_figure(
    run_dir: str, config: grounding_config.GroundingConfig, task: Grounding, trained: experiment.TrainedRuns
) -> None:
    """boxes.png: evaluation scenes of every size with the true and predicted box per model."""
    eval_set = task.data.eval_set
    rows = _figure_rows(min(config.figure_scenes, eval_set["boxes"].shape[0]), np.asarray(eval_set["boxes"]))
    batch = {name: value[rows] for name, value in eval_set.items()}
    predict = jax.jit(task.predict)
    predictions = {
        label: np.asarray(predict(params, batch))
        for label, params in _figure_members(trained, config).items()
    }
    sizes = np.asarray(boxes.size_bucket(batch["boxes"]))
    texts = [
        f"{task.data.vocabulary.decode(prompt)} ({boxes.SIZE_BUCKETS[size]})"
        for prompt, size in zip(np.asarray(batch["prompts"]), sizes)
    ]
    plots.plot_grounding(
        os.path.join(run_dir, "boxes.png"),
        np.asarray(batch["images"]),
        np.asarray(batch["boxes"]),
        predictions,
        texts=texts,
        grid=boxes.GRID,
        title="Referring expressions: true box (green), predicted box (red)",
    )


def _with_bucket_stderrs(evaluation: experiment.Evaluation, counts: np.ndarray) -> experiment.Evaluation:
    """The standard error of each bucket's accuracy a from its own n objects, √(a(1−a)/(n−1)).

    (The rescaled rows of ``evaluate`` have the right means but spread over all S objects, so
    the standard errors computed from them overstate the per-bucket ones.)
    """
    accuracy = np.clip(evaluation.means, 0.0, 1.0)
    stderrs = np.sqrt(accuracy * (1.0 - accuracy) / np.maximum(np.round(counts) - 1.0, 1.0))
    return experiment.Evaluation(evaluation.weights, evaluation.means, stderrs)


def _append_accuracy_table(
    run_dir: str, rs: experiment.Evaluation, runs: experiment.Evaluation, init
) -> None:
    """Per-bucket accuracies of the experts, the uniform soup, MORL and the init, in summary.md."""
    names = boxes.SIZE_BUCKETS
    lines = ["", "## Accuracy (IoU > 0.5) per object size", "", "| model | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")

    def row(label, means, stderrs):
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(means, stderrs)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("pre-trained init", init.means[0], init.stderrs[0])
    for name, index in zip(names, experiment.expert_rows(rs.weights)):
        row(f"expert {name}", rs.means[index], rs.stderrs[index])
    uniform = int(np.argmin(np.abs(rs.weights - 1.0 / rs.weights.shape[1]).sum(axis=1)))
    row(f"soup λ={np.round(rs.weights[uniform], 2).tolist()}", rs.means[uniform], rs.stderrs[uniform])
    for mu, means, stderrs in zip(runs.weights, runs.means, runs.stderrs):
        if not np.any(np.isclose(mu, 1.0)):
            row(f"MORL μ={np.round(mu, 2).tolist()}", means, stderrs)
    with open(os.path.join(run_dir, "summary.md"), "a") as handle:
        handle.write("\n".join(lines) + "\n")


def run(
    run_dir: str, config: grounding_config.GroundingConfig, *, resume: bool = False, shard: bool = False
) -> dict[str, Any]:
    """The whole experiment; writes the run directory and returns the summary numbers."""
    task = build(config)
    run_config = config_lib.to_dict(config)
    trained = experiment.train_runs(
        run_dir, task.spec, task.budget, config=run_config, resume=resume, shard=shard
    )
    _, _, eval_key = experiment.phase_keys(config.seed)
    evaluations = experiment.evaluate_runs(
        trained, lambda params: task.spec.evaluate(params, None, eval_key), config.rs_points
    )
    counts = task.data.eval_fractions * task.data.eval_set["boxes"].shape[0]
    rs, runs, init = (_with_bucket_stderrs(evaluation, counts) for evaluation in evaluations[:3])
    summary = experiment.write_results(
        run_dir,
        reward_names=task.spec.reward_names,
        expert_names=task.spec.expert_names,
        rs=rs,
        morl=runs,  # the experts are MORL's one-hot μ; the uniform μ is its own run
        init=init,
        config=run_config,
        lmc_tolerance=2.0 * float(rs.stderrs.max()),
    )
    _append_accuracy_table(run_dir, rs, runs, init)
    _write_boxes_figure(run_dir, config, task, trained)
    return summary


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(
        argv,
        prog="python -m tasks.grounding",
        description=__doc__,
        configs=grounding_config,
        run=run,
        default_out="runs/grounding",
    )


if __name__ == "__main__":
    main()
