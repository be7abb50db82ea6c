"""Visual grounding: one expert per object size, their rewarded soups over the simplex, MORL.

    python -m tasks.grounding [--preset cpu|paper|smoke] [--out runs/grounding]
                              [--set key=value ...] [--resume]

Paper Appendix F (Fig. 5c / 14): a unified encoder-decoder reads an image and a referring
expression and emits the target's box as 4 location tokens (1000 bins on the 1000×1000
grid). After pre-training by cross-entropy (CE) on the true box tokens, three experts are
fine-tuned with CE + 5 × self-critical REINFORCE, each rewarded with IoU > ``iou_threshold``
(the paper's 0.5; 0.9 in the CPU preset) only on objects of one size: small (< 30 000 grid
px²), medium (< 100 000), large. MORL trains once more at the uniform weighting. Every point
(the soups of the simplex grid, the runs, the init) is scored by its accuracy (the same IoU
threshold) on each size bucket of a held-out set: results.json, spider.png, and boxes.png
with the true (green) and predicted (red) boxes of each expert and of the uniform soup.
See configs/grounding.py.

Evaluation: reward k of an expression is 1[IoU > threshold], counted only for objects of bucket k
(the pipeline's reward mask), so each reward's mean is the accuracy on its bucket and its
standard error comes from that bucket's objects alone. Every model is scored on the same
expressions, so results.json also holds paired differences between each expert and its rivals.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import grounding as grounding_config
from rs_jax import cli, experiment, pipeline, plots, soup
from rs_jax.data import refcoco, scenes
from rs_jax.data.vocab import Vocabulary, with_location_tokens
from rs_jax.models import backbones, locations
from rs_jax.rewards import boxes
from rs_jax.train import reinforce, supervised

OUTPUT_LENGTH = 4  # x0 y0 x1 y1


@dataclasses.dataclass(frozen=True)
class GroundingData:
    """Where images, referring expressions and target boxes come from.

    Attributes:
      sample: (key, batch_size[, bucket_weights (3,)]) -> {"images" (B, H, W, 3), "prompts" (B, Lp),
        "boxes" (B, 4)}, jit-able; the scene world weighs each scene's objects by
        ``bucket_weights`` (``rewarded_share``).
      eval_set: the same dict for the fixed evaluation set (S rows).
      vocabulary: words then ``num_bins`` location tokens.
      first_location_id: id of ``<loc_0>``.
    """

    sample: Callable[[jax.Array, int], dict[str, jax.Array]]
    eval_set: dict[str, jax.Array]
    vocabulary: Vocabulary
    first_location_id: int


def _check_buckets(target_boxes: Any) -> None:
    """ValueError unless the evaluation set has objects of every size bucket."""
    buckets = np.asarray(boxes.size_bucket(jnp.asarray(target_boxes)))
    counts = np.bincount(buckets, minlength=len(boxes.SIZE_BUCKETS))
    empty = [name for name, count in zip(boxes.SIZE_BUCKETS, counts) if count == 0]
    if empty:
        raise ValueError(f"The evaluation set has no {' or '.join(empty)} objects; use a bigger one.")


def _take_slot(array: jax.Array, slot: jax.Array) -> jax.Array:
    """(B, M, ...) -> (B, ...): row b's slot ``slot[b]``."""
    index = slot.reshape((-1,) + (1,) * (array.ndim - 1))
    return jnp.take_along_axis(array, index, axis=1)[:, 0]


def scene_data(config: grounding_config.GroundingConfig, eval_key: jax.Array) -> GroundingData:
    """The scene world: one random object of each fresh scene per row; a held-out set balanced over
    the three size buckets."""
    scene_config = scenes.reading_config(
        "referring",
        image_size=config.image_size,
        max_objects=config.max_objects,
        referring_length=config.prompt_length,
    )
    vocabulary, first_location_id = with_location_tokens(scenes.scene_vocabulary(), config.num_bins)

    def sample(key, batch_size, bucket_weights=None):
        scene_key, slot_key = jax.random.split(key)
        drawn = scenes.sample_scenes(scene_key, batch_size, scene_config)
        logits = jnp.where(drawn.referring_valid, 0.0, -jnp.inf)
        if bucket_weights is not None:  # (3,): favour the referred objects of the weighted buckets
            share = config.rewarded_share
            favour = (1.0 - share) + share * len(boxes.SIZE_BUCKETS) * bucket_weights
            logits = logits + jnp.log(jnp.maximum(favour[boxes.size_bucket(drawn.boxes)], 1e-6))
        slot = jax.random.categorical(slot_key, logits)
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
    _check_buckets(eval_set["boxes"])
    return GroundingData(sample, eval_set, vocabulary, first_location_id)


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
    vocabulary, first_location_id = with_location_tokens(words, config.num_bins)
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
    _check_buckets(eval_set["boxes"])
    return GroundingData(sample, eval_set, vocabulary, first_location_id)


def _greedy_boxes(sample_boxes: Callable, first: int, num_bins: int, params, batch) -> jax.Array:
    """(B, 4) greedy box predictions on the 1000×1000 grid for ``batch``."""
    tokens = sample_boxes(params, batch, jax.random.PRNGKey(0), greedy=True)
    return locations.location_tokens_to_boxes(tokens, first, num_bins)


def _hits(
    predict: Callable, eval_set: dict[str, jax.Array], iou_threshold: float, n_buckets: int, params, key
) -> jax.Array:
    """(S, n_buckets) 1[IoU > threshold] of each evaluation expression, repeated for every size
    reward (the task's reward mask keeps each object for its own bucket only); greedy: no key."""
    del key
    hits = boxes.grounding_hits(predict(params, eval_set), eval_set["boxes"], iou_threshold)
    return jnp.repeat(hits[:, None].astype(jnp.float32), n_buckets, axis=1)


def build(config: grounding_config.GroundingConfig) -> pipeline.Task:
    """The task's declaration: data, model, learners, rewards, runs and budgets."""
    pipeline.check_pretrains(config.budget, config.model)
    if config.refs and config.rewarded_share:
        raise ValueError("rewarded_share weighs the scene world's objects; with refs= it must be 0.")
    _, _, eval_key = pipeline.phase_keys(config.seed)
    data = refcoco_data(config) if config.refs else scene_data(config, jax.random.fold_in(eval_key, 7))
    first, num_bins = data.first_location_id, config.num_bins
    backbone, model, pretrained = backbones.build_model(
        config, data.vocabulary, prompt_length=config.prompt_length, output_length=OUTPUT_LENGTH
    )
    location_only = locations.location_mask(data.vocabulary.size, first, num_bins)

    def cross_entropy(params, batch):
        targets = locations.boxes_to_location_tokens(batch["boxes"], first, num_bins)
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

    box_options = {"max_length": OUTPUT_LENGTH, "allowed": location_only, "stop_at_eos": False}

    def sample_boxes(params, batch, key, greedy=False):
        return backbone.sample_batch(model, params, batch, key, greedy=greedy, **box_options)

    pretrain_learner = supervised.SupervisedLearner(
        lambda key: data.sample(key, config.pretrain_batch),
        lambda params, batch, key: cross_entropy(params, batch),
    )
    enriched = config.rewarded_share > 0
    finetune_learner = reinforce.ReinforceLearner(
        sample_inputs=(
            (lambda key, weights: data.sample(key, config.images_per_update, weights))
            if enriched
            else (lambda key: data.sample(key, config.images_per_update))
        ),
        inputs_by_weights=enriched,
        sample_outputs=sample_boxes,
        log_prob=lambda params, inputs, outputs: backbone.batch_log_prob(
            model, params, inputs, outputs, location_only
        ),
        reward_components=lambda inputs, outputs: boxes.size_rewards(
            locations.location_tokens_to_boxes(outputs, first, num_bins),
            inputs["boxes"],
            config.iou_threshold,
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
    run_mus = pipeline.experts_and_morl(n_buckets, (1.0 / n_buckets,) if config.morl else ())
    predict = functools.partial(_greedy_boxes, sample_boxes, first, num_bins)
    eval_buckets = np.asarray(jax.nn.one_hot(boxes.size_bucket(data.eval_set["boxes"]), n_buckets))

    def report(outcome: pipeline.Outcome) -> pipeline.Report:
        return pipeline.Report(
            sections=[_accuracy_table(outcome, config.iou_threshold)],
            figures={"boxes.png": lambda path: _draw_boxes(path, config, data, predict, outcome.trained)},
        )

    return pipeline.Task.one_expert_per_reward(
        name="grounding",
        rewards=boxes.SIZE_BUCKETS,
        run_mus=run_mus,
        pretraining=pipeline.loaded_or_supervised(
            pretrained,
            pretrain_learner,
            lambda key: backbone.init_params(model, key, first_location_id=first, num_bins=num_bins),
            n_buckets,
            starting_point=config.starting_point,
            task_name="grounding",
        ),
        finetuning=lambda params, carry: pipeline.FineTuning(
            learner=finetune_learner,
            start=lambda key: (params, carry),
            evaluate=jax.tree_util.Partial(_hits, predict, data.eval_set, config.iou_threshold, n_buckets),
            reward_mask=eval_buckets,
            report=report,
        ),
        config=config,
    )


def _figure_rows(count: int, eval_boxes: np.ndarray) -> np.ndarray:
    """Evaluation rows for the figure: as many of each size bucket as fit, in bucket order."""
    buckets = np.asarray(boxes.size_bucket(jnp.asarray(eval_boxes)))
    per_bucket = [np.flatnonzero(buckets == bucket) for bucket in range(len(boxes.SIZE_BUCKETS))]
    rows = [
        row for position in range(count) for row in [r[position] for r in per_bucket if position < len(r)]
    ]
    return np.sort(np.array(rows[:count]))


def _figure_members(trained: pipeline.TrainedRuns, morl: bool) -> dict[str, Any]:
    experts = trained.experts
    members = {"init": trained.init}
    members |= {f"expert {name}": expert for name, expert in zip(boxes.SIZE_BUCKETS, experts)}
    members["uniform soup"] = soup.interpolate(experts, np.full(len(experts), 1.0 / len(experts)))
    if morl:
        members["MORL uniform μ"] = trained.runs[-1]
    return members


def _draw_boxes(
    path: str,
    config: grounding_config.GroundingConfig,
    data: GroundingData,
    predict: Callable,
    trained: pipeline.TrainedRuns,
) -> None:
    """Evaluation scenes of every size with the true and predicted box per model."""
    eval_set = data.eval_set
    rows = _figure_rows(min(config.figure_scenes, eval_set["boxes"].shape[0]), np.asarray(eval_set["boxes"]))
    batch = {name: value[rows] for name, value in eval_set.items()}
    predict = jax.jit(predict)
    predictions = {
        label: np.asarray(predict(params, batch))
        for label, params in _figure_members(trained, config.morl).items()
    }
    sizes = np.asarray(boxes.size_bucket(batch["boxes"]))
    texts = [
        f"{data.vocabulary.decode(prompt)} ({boxes.SIZE_BUCKETS[size]})"
        for prompt, size in zip(np.asarray(batch["prompts"]), sizes)
    ]
    plots.plot_grounding(
        path,
        np.asarray(batch["images"]),
        np.asarray(batch["boxes"]),
        predictions,
        texts=texts,
        grid=locations.GRID,
        title="Referring expressions: true box (green), predicted box (red)",
    )


def _accuracy_table(outcome: pipeline.Outcome, iou_threshold: float) -> str:
    """Per-bucket accuracies of the init, the experts, the uniform soup and MORL (Markdown)."""
    rs, names = outcome.rs, boxes.SIZE_BUCKETS
    header = "| model | " + " | ".join(names) + " |"
    lines = [f"## Accuracy (IoU > {iou_threshold:g}) per object size", "", header]
    lines.append("|---" * (len(names) + 1) + "|")

    def row(label, means, stderrs):
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(means, stderrs)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("pre-trained init", outcome.init.means[0], outcome.init.stderrs[0])
    for name, index in zip(names, experiment.expert_rows(rs.weights)):
        row(f"expert {name}", rs.means[index], rs.stderrs[index])
    uniform = int(np.argmin(np.abs(rs.weights - 1.0 / rs.weights.shape[1]).sum(axis=1)))
    row(f"soup λ={np.round(rs.weights[uniform], 2).tolist()}", rs.means[uniform], rs.stderrs[uniform])
    for mu, means, stderrs in zip(outcome.runs.weights, outcome.runs.means, outcome.runs.stderrs):
        if not np.any(np.isclose(mu, 1.0)):
            row(f"MORL μ={np.round(mu, 2).tolist()}", means, stderrs)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(argv, name="grounding", description=__doc__, configs=grounding_config, build=build)


if __name__ == "__main__":
    main()
