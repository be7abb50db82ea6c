"""VQA: experts on two answer rewards, their rewarded soups, MORL (paper Appendix F).

    python -m tasks.vqa                                         # preset "cpu" (default)
    python -m tasks.vqa --set rewards=accuracy,bleu1
    python -m tasks.vqa --preset paper --set questions=/data/v2_OpenEnded_mscoco_train2014_questions.json \
        annotations=/data/v2_mscoco_train2014_annotations.json image_dir=/data/coco/train2014 \
        eval_questions_file=/data/v2_OpenEnded_mscoco_val2014_questions.json \
        eval_annotations=/data/v2_mscoco_val2014_annotations.json eval_image_dir=/data/coco/val2014

Presets:
  cpu    the procedural scene world (32×32 images; colour, shape, count, yes/no and position
         questions, 3 reference answers each: "red" / "it is red" / "the circle is red"),
         a tiny unified ViT + GPT-2 (prompt = question, output = the answer's words)
         pre-trained by maximum likelihood on one random reference answer (the shipped
         starting point; starting_point= pre-trains budget.pretrain_updates in the run), then
         self-critical experts on exact-match accuracy (the short canonical answer) and
         METEOR (closest reference, favours complete sentences), and MORL at μ = 0.5,
         all vmapped as one program.
  pretrain  the cpu model pre-trained at length (30 000 updates, cosine step size): the recipe
         of the shipped starting point, rs_jax/pretrained/vqa.
  paper  VQAv2 from local files (paths with --set); for a GPU.
  smoke  seconds; for tests.

Expected result (cpu): the accuracy expert answers with the short canonical words, the METEOR
expert with full sentences; the soups trace a front between them (front.png), and
samples.png shows each soup's answers to the same questions.
"""

from __future__ import annotations

import dataclasses

from configs import UnifiedModelConfig, preset_config, pretrain_recipe, unified_preset
from rs_jax.config import BudgetConfig
from rs_jax.starting_points import SHIPPED

BUDGET = BudgetConfig(
    pretrain_updates=4000,
    pretrain_learning_rate=2e-3,
    finetune_updates=300,
    finetune_learning_rate=1e-4,
    checkpoint_every=100,
)


@dataclasses.dataclass(frozen=True)
class VQAConfig(UnifiedModelConfig):
    rewards: tuple[str, ...] = (
        "accuracy",
        "meteor",
    )  # two or more of rs_jax.rewards.answers.ANSWER_REWARD_NAMES
    questions: str = ""  # VQAv2 training questions JSON; "" uses the procedural scene world
    annotations: str = ""  # its annotations JSON
    image_dir: str = ""  # folder of its images
    image_template: str = "COCO_{subtype}_{image_id:012d}.jpg"  # image file names (VQAv2's COCO names)
    eval_questions_file: str = ""  # evaluation questions/annotations/images (default: the training files)
    eval_annotations: str = ""
    eval_image_dir: str = ""
    max_questions: int = 0  # real data: load at most this many questions per file (0: all)
    question_length: int = 12  # tokens incl. <eos>
    answer_length: int = 7
    num_answers: int = 10  # reference answers kept per question (real data)
    budget: BudgetConfig = BUDGET
    pretrain_batch: int = 64
    images_per_update: int = 16
    num_samples: int = 4
    morl_mus: tuple[float, ...] = (0.5,)
    decoding_mixing: bool = False  # MOD's front (N forward passes per token; README "Decoding-time mixing")
    eval_questions: int = 300
    figure_questions: int = 5


PRESETS: dict[str, VQAConfig] = {
    "cpu": VQAConfig(starting_point=SHIPPED),
    "pretrain": VQAConfig(budget=pretrain_recipe(BUDGET, 30_000)),
    "paper": VQAConfig(
        **unified_preset("paper", BUDGET),
        question_length=24,
        answer_length=8,
        eval_questions=5000,
    ),
    "smoke": VQAConfig(
        **unified_preset("smoke", BUDGET),
        rs_points=3,
        eval_questions=4,
        figure_questions=2,
    ),
}


def get_config(preset: str = "cpu") -> VQAConfig:
    """The config of a preset (see the module docstring)."""
    return preset_config(PRESETS, preset)
