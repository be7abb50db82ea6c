"""VQA: self-critical experts on answer rewards, their rewarded soups, MORL.

    python -m tasks.vqa [--preset cpu|paper|smoke] [--out runs/vqa] [--set key=value ...] [--resume]

Paper Appendix F: the unified encoder-decoder of the grounding task (image in the encoder,
question as the decoder's prompt, answer words out) is pre-trained by maximum likelihood,
then fine-tuned by self-critical REINFORCE (K sampled answers per question,
mean-of-others baseline), one expert per answer reward: exact-match accuracy against the
canonical answer and METEOR against the closest reference by default (also ``vqa_accuracy``
and ``bleu1``, ``rs_jax.rewards.answers``). Beside the rewarded soups θ(λ) the run reports
MORL, MOD's decoding-time mixing of the experts' log-probabilities (``decoding_mixing``), and
draws a few questions with every soup's answer (samples.png, samples.json).
See configs/vqa.py.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import vqa as vqa_config
from rs_jax import cli, experiment, pipeline, plots
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
    scene_config = scenes.reading_config(
        "questions",
        image_size=config.image_size,
        question_length=config.question_length,
        answer_length=config.answer_length,
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


def _greedy_answers(sample_answers: Callable, params, batch: dict[str, jax.Array]) -> jax.Array:
    """(B, L) greedy answer ids to the questions of ``batch``."""
    return sample_answers(params, batch, jax.random.PRNGKey(0), greedy=True)


def _answer_rewards(
    sample_answers: Callable, score: Callable, eval_set: dict[str, jax.Array], params, key
) -> jax.Array:
    """(S, R) rewards of the greedy answers to the evaluation set (``key`` unused: greedy)."""
    del key
    return score(_greedy_answers(sample_answers, params, eval_set), eval_set["references"])


def answered_right(
    sample_answers: Callable, eos_id: int, pad_id: int, eval_set: dict[str, jax.Array], params, key
) -> dict[str, tuple[float, float]]:
    """The share of evaluation questions whose greedy answer is one of their reference answers,
    in any of its wordings ("red", "it is red", ...), ± its standard error (``key`` unused: greedy)."""
    del key
    outputs = _greedy_answers(sample_answers, params, eval_set)
    matches = answers.exact_match(
        jnp.where(outputs == eos_id, pad_id, outputs),
        jnp.where(eval_set["references"] == eos_id, pad_id, eval_set["references"]),
        pad_id=pad_id,
    ).any(axis=1)
    mean, stderr = experiment.mean_and_stderr(np.asarray(matches, np.float64))
    return {"answered_right": (float(mean), float(stderr))}


def _mixture_rewards(
    sample_mixture: Callable, score: Callable, eval_set: dict[str, jax.Array], stacked, weights, key
) -> jax.Array:
    """(S, R) rewards of the greedy answers decoded by MOD from the experts at weights (N,)."""
    del key
    outputs = sample_mixture(stacked, weights, eval_set, jax.random.PRNGKey(0))
    return score(outputs, eval_set["references"])


def build(config: vqa_config.VQAConfig) -> pipeline.Task:
    """The task's declaration: data, model, learners, rewards, runs and budgets."""
    pipeline.check_rewards(config.rewards, answers.ANSWER_REWARD_NAMES)
    pipeline.check_pretrains(config.budget, config.model)
    _, _, eval_key = pipeline.phase_keys(config.seed)
    data = vqav2_data(config) if config.questions else scene_data(config, jax.random.fold_in(eval_key, 7))
    backbone, model, pretrained = backbones.build_model(
        config, data.vocabulary, prompt_length=config.question_length, output_length=config.answer_length
    )
    _, eos_id, pad_id = backbone.special_ids(model)
    words_only = backbone.word_mask(model, None)
    score = answers.answer_rewards(config.rewards, pad_id=pad_id, eos_id=eos_id)

    answer_options = {"max_length": config.answer_length, "allowed": words_only}

    def sample_answers(params, batch, key, greedy=False):
        return backbone.sample_batch(model, params, batch, key, greedy=greedy, **answer_options)

    def sample_mixture(stacked, weights, batch, key):
        return backbone.sample_batch_mixture(
            model, stacked, weights, batch, key, greedy=True, **answer_options
        )

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
        log_prob=lambda params, inputs, outputs: backbone.batch_log_prob(
            model, params, inputs, outputs, words_only
        ),
        reward_components=lambda inputs, outputs: score(outputs, inputs["references"]),
        num_samples=config.num_samples,
        baseline="others",
    )

    run_mus = pipeline.experts_and_morl(len(config.rewards), config.morl_mus)

    def report(outcome: pipeline.Outcome) -> pipeline.Report:
        members = pipeline.figure_soups(outcome.trained, config.rewards)
        return pipeline.Report(
            figures={"samples.png": lambda path: _draw_samples(path, config, data, sample_answers, members)}
        )

    return pipeline.Task.one_expert_per_reward(
        name="vqa",
        rewards=config.rewards,
        run_mus=run_mus,
        pretraining=pipeline.loaded_or_supervised(
            pretrained,
            pretrain_learner,
            lambda key: backbone.init_params(model, key),
            len(config.rewards),
            starting_point=config.starting_point,
            task_name="vqa",
        ),
        finetuning=lambda params, carry: pipeline.FineTuning(
            learner=finetune_learner,
            start=lambda key: (params, carry),
            evaluate=jax.tree_util.Partial(_answer_rewards, sample_answers, score, data.eval_set),
            mixtures=(
                {
                    pipeline.MOD: pipeline.DecodingMixture(
                        jax.tree_util.Partial(_mixture_rewards, sample_mixture, score, data.eval_set)
                    )
                }
                if config.decoding_mixing
                else None
            ),
            report=report,
        ),
        config=config,
        starting_quality=functools.partial(answered_right, sample_answers, eos_id, pad_id, data.eval_set),
    )


def _draw_samples(
    path: str,
    config: vqa_config.VQAConfig,
    data: VQAData,
    sample_answers: Callable,
    members: dict[str, Any],
) -> None:
    """Evaluation questions with the greedy answer of every soup under their images."""
    count = min(config.figure_questions, data.eval_set["prompts"].shape[0])
    batch = {name: value[:count] for name, value in data.eval_set.items()}
    answer = jax.jit(functools.partial(_greedy_answers, sample_answers))
    vocabulary = data.vocabulary
    texts = {
        "question": [vocabulary.decode(row) for row in np.asarray(batch["prompts"])],
        "reference": [vocabulary.decode(row) for row in np.asarray(batch["references"][:, 0])],
    }
    for label, params in members.items():
        texts[label] = [vocabulary.decode(row) for row in np.asarray(answer(params, batch))]
    plots.plot_captioned_images(
        path,
        np.asarray(batch["images"]),
        texts,
        title=f"Greedy answers per soup (λ = weight of the {config.rewards[-1]} expert)",
    )


def main(argv: list[str] | None = None) -> dict:
    return cli.run_task(argv, name="vqa", description=__doc__, configs=vqa_config, build=build)


if __name__ == "__main__":
    main()
