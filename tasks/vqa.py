"""VQA: self-critical experts on answer rewards, their rewarded soups, MORL.

    python -m tasks.vqa [--preset cpu|paper|smoke] [--out runs/vqa] [--set key=value ...] [--resume]

Paper Appendix F: the unified encoder-decoder of the grounding task (image in the encoder,
question as the decoder's prompt, answer words out) is pre-trained by maximum likelihood,
then fine-tuned by self-critical REINFORCE (K sampled answers per question,
mean-of-others baseline), one expert per answer reward: exact-match accuracy against the
canonical answer and METEOR against the closest reference by default (also ``vqa_accuracy``
and ``bleu1``, ``rs_jax.rewards.answers``). Beside the rewarded soups θ(λ) the run reports
MORL, and draws a few questions with every soup's answer (samples.png, samples.json).
See configs/vqa.py.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import vqa as vqa_config
from rs_jax import cli, experiment, plots
from rs_jax import config as config_lib
from rs_jax.data import scenes, vqa
from rs_jax.data.vocab import Vocabulary
from rs_jax.models import backbones
from rs_jax.rewards import answers
from rs_jax.train import reinforce, supervised


@dataclasses.dataclass(frozen=True)
class VQAData:
    """Where images, questions and reference answers come from.

    Attributes:
      sample: (key, batch_size) -> {"images" (B, H, W, 3), "prompts" (B, Lq), "references"
        (B, A, La)}, jit-able; references[:, 0] is the canonical answer.
      eval_set: the same dict for the fixed evaluation questions (S rows).
      vocabulary: decodes token ids.
    """

    sample: Callable[[jax.Array, int], dict[str, jax.Array]]
    eval_set: dict[str, jax.Array]
    vocabulary: Vocabulary


def scene_data(config: vqa_config.VQAConfig, eval_key: jax.Array) -> VQAData:
    """The scene world: one random question of each fresh scene per row; held-out scenes for evaluation."""
    scene_config = scenes.SceneConfig(  # captions and referring expressions minimal: faster compile
        image_size=config.image_size,
        question_length=config.question_length,
        answer_length=config.answer_length,
        num_captions=1,
        caption_length=2,
        referring_length=2,
    )

    def pick(drawn: scenes.Scenes, question: jax.Array) -> dict[str, jax.Array]:
        rows = jnp.arange(question.shape[0])
        return {
            "images": drawn.images,
            "prompts": drawn.questions[rows, question],
            "references": drawn.answers[rows, question],
        }

    def sample(key, batch_size):
        scene_key, question_key = jax.random.split(key)
        drawn = scenes.sample_scenes(scene_key, batch_size, scene_config)
        return pick(drawn, jax.random.randint(question_key, (batch_size,), 0, scene_config.num_questions))

    held_out = jax.jit(scenes.sample_scenes, static_argnums=(1, 2))(
        eval_key, config.eval_questions, scene_config
    )
    eval_set = pick(held_out, jnp.arange(config.eval_questions) % scene_config.num_questions)
    return VQAData(sample, eval_set, scenes.scene_vocabulary())


def vqav2_data(config: vqa_config.VQAConfig) -> VQAData:
    """VQAv2 from local files, loaded into memory (``max_questions`` bounds it)."""
    if not config.annotations:
        raise ValueError("questions= needs annotations= (the VQAv2 annotations JSON) too.")
    train_split = vqa.load_vqa(
        config.questions, config.annotations, config.image_dir or None, image_template=config.image_template
    )
    eval_split = (
        vqa.load_vqa(
            config.eval_questions_file,
            config.eval_annotations or config.annotations,
            config.eval_image_dir or config.image_dir or None,
            image_template=config.image_template,
        )
        if config.eval_questions_file
        else train_split
    )
    vocabulary = vqa.build_vocabulary(train_split)
    shapes = {
        "image_size": config.image_size,
        "question_length": config.question_length,
        "answer_length": config.answer_length,
        "num_answers": config.num_answers,
    }
    train = vqa.vqa_arrays(train_split, vocabulary, max_questions=config.max_questions or None, **shapes)
    held_out = vqa.vqa_arrays(eval_split, vocabulary, max_questions=config.eval_questions, **shapes)
    images, image_index = jnp.asarray(train.images), jnp.asarray(train.image_index)
    questions, references = jnp.asarray(train.questions), jnp.asarray(train.answers)

    def sample(key, batch_size):
        rows = jax.random.randint(key, (batch_size,), 0, questions.shape[0])
        return {
            "images": images[image_index[rows]],
            "prompts": questions[rows],
            "references": references[rows],
        }

    eval_set = {
        "images": jnp.asarray(held_out.images[held_out.image_index]),
        "prompts": jnp.asarray(held_out.questions),
        "references": jnp.asarray(held_out.answers),
    }
    return VQAData(sample, eval_set, vocabulary)


def one_reference(references: jax.Array, key: jax.Array, pad_id: int) -> jax.Array:
    """(B, A, L) -> (B, L): one non-empty reference answer per question, uniformly at random."""
    present = references[:, :, 0] != pad_id
    choice = jax.random.categorical(key, jnp.where(present, 0.0, -jnp.inf))
    return jnp.take_along_axis(references, choice[:, None, None], axis=1)[:, 0]


@dataclasses.dataclass(frozen=True)
class VQATask:
    """Everything ``run`` needs: the RL declaration, budget, model, data, answer function and scorer."""

    spec: experiment.RLExperiment
    budget: experiment.Budget
    model: Any
    data: VQAData
    answer: Callable[[Any, dict[str, jax.Array]], jax.Array]
    score: Callable[[jax.Array, jax.Array], jax.Array]


def build(config: vqa_config.VQAConfig) -> VQATask:
    """The task's declaration: data, model, learners, rewards, runs and budgets."""
    unknown = [name for name in config.rewards if name not in answers.ANSWER_REWARD_NAMES]
    if len(config.rewards) < 2 or unknown:
        raise ValueError(
            f"rewards must name at least two of {', '.join(answers.ANSWER_REWARD_NAMES)}; got "
            f"{list(config.rewards)}" + (f" (unknown: {unknown})." if unknown else ".")
        )
    if config.pretrain_updates == 0 and not config.model:
        raise ValueError(
            "Nothing pre-trains the model: give --set model=<HF directory> or pretrain_updates>0."
        )
    _, _, eval_key = experiment.phase_keys(config.seed)
    data = vqav2_data(config) if config.questions else scene_data(config, jax.random.fold_in(eval_key, 7))
    backbone, model, pretrained = backbones.build_model(
        config, data.vocabulary, prompt_length=config.question_length, output_length=config.answer_length
    )
    _, eos_id, pad_id = backbones.special_ids(backbone, model)
    words_only = backbone.word_mask(model, None)
    score = answers.answer_rewards(config.rewards, pad_id=pad_id, eos_id=eos_id)

    def sample_answers(params, batch, key, greedy=False):
        return backbone.sample_outputs(
            model,
            params,
            batch["images"],
            batch["prompts"],
            key,
            max_length=config.answer_length,
            allowed=words_only,
            greedy=greedy,
        ).tokens

    def pretrain_batch(key):
        data_key, reference_key = jax.random.split(key)
        batch = data.sample(data_key, config.pretrain_batch)
        return {**batch, "targets": one_reference(batch["references"], reference_key, pad_id)}

    pretrain_learner = supervised.SupervisedLearner(
        pretrain_batch,
        lambda params, batch, key: backbone.sequence_cross_entropy(
            model, params, batch["images"], batch["prompts"], batch["targets"], words_only
        ),
    )
    finetune_learner = reinforce.ReinforceLearner(
        sample_inputs=lambda key: data.sample(key, config.images_per_update),
        sample_outputs=sample_answers,
        log_prob=lambda params, inputs, outputs: backbone.token_log_probs(
            model, params, inputs["images"], inputs["prompts"], outputs, words_only
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
    run_mus = [*experts] + [mu for mu in morl_mus if not np.any(np.all(np.isclose(experts, mu), axis=1))]

    def answer(params, batch):
        return sample_answers(params, batch, jax.random.PRNGKey(0), greedy=True)

    def evaluate(params, carry, key):
        del carry, key  # greedy decoding
        return score(answer(params, data.eval_set), data.eval_set["references"])

    spec = experiment.RLExperiment(
        reward_names=tuple(config.rewards),
        expert_names=tuple(config.rewards),
        pretrain_learner=pretrain_learner,
        finetune_learner=finetune_learner,
        init_params=(
            (lambda key: backbone.init_params(model, key)) if pretrained is None else (lambda key: pretrained)
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
    return VQATask(spec, budget, model, data, answer, score)


def _write_samples(
    run_dir: str, config: vqa_config.VQAConfig, task: VQATask, trained: experiment.TrainedRuns
) -> None:
    """samples.png (and samples.json): evaluation questions with the answer of every soup."""
    count = min(config.figure_questions, task.data.eval_set["prompts"].shape[0])
    batch = {name: value[:count] for name, value in task.data.eval_set.items()}
    answer = jax.jit(task.answer)
    vocabulary = task.data.vocabulary
    texts = {
        "question": [vocabulary.decode(row) for row in np.asarray(batch["prompts"])],
        "reference": [vocabulary.decode(row) for row in np.asarray(batch["references"][:, 0])],
    }
    for label, params in experiment.figure_soups(trained, config.rewards).items():
        texts[label] = [vocabulary.decode(row) for row in np.asarray(answer(params, batch))]
    plots.plot_captioned_images(
        os.path.join(run_dir, "samples.png"),
        np.asarray(batch["images"]),
        texts,
        title=f"Greedy answers per soup (λ = weight of the {config.rewards[-1]} expert)",
    )


def run(
    run_dir: str, config: vqa_config.VQAConfig, *, resume: bool = False, shard: bool = False
) -> dict[str, Any]:
    """The whole experiment; writes the run directory and returns the summary numbers."""
    task = build(config)
    run_config = config_lib.to_dict(config)
    trained = experiment.train_runs(
        run_dir, task.spec, task.budget, config=run_config, resume=resume, shard=shard
    )
    _, _, eval_key = experiment.phase_keys(config.seed)
    rs, runs, init, _ = experiment.evaluate_runs(
        trained, lambda params: task.spec.evaluate(params, None, eval_key), config.rs_points
    )
    summary = experiment.write_results(
        run_dir,
        reward_names=task.spec.reward_names,
        expert_names=task.spec.expert_names,
        rs=rs,
        morl=runs,
        init=init,
        config=run_config,
        lmc_tolerance=2.0 * float(rs.stderrs.max()),
    )
    _write_samples(run_dir, config, task, trained)
    return summary


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(
        argv,
        prog="python -m tasks.vqa",
        description=__doc__,
        configs=vqa_config,
        run=run,
        default_out="runs/vqa",
    )


if __name__ == "__main__":
    main()
