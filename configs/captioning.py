"""Captioning: self-critical experts on caption metrics (paper Appendix D, Fig. 3, rebuttal Fig. 4c).

    python -m tasks.captioning                                  # preset "cpu" (default)
    python -m tasks.captioning --set rewards=bleu1,rouge,cider  # spider map over 3 experts
    python -m tasks.captioning --preset paper --set model=/path/to/vit-gpt2 data=/path/dataset_coco.json \
        image_dir=/path/to/coco

Presets:
  cpu    the procedural scene world (32×32 images, 5 reference captions of different
         wording and length each), a tiny ViT + GPT-2 captioner pre-trained by maximum
         likelihood in the run (starting_point=shipped loads the pretrain preset's
         weights instead), then self-critical fine-tuning (5 samples
         per image, mean-of-others baseline): two seeds per reward (for the model-soup
         comparison) and MORL at μ = 0.5, all vmapped as one program.
  pretrain  the cpu captioner pre-trained at length (30 000 updates, cosine step size): the
         recipe of the shipped starting point, rs_jax/pretrained/captioning.
  paper  a local HF VisionEncoderDecoder model and the COCO Karpathy split (both paths
         given with --set); bigger batches; for a GPU.
  smoke  seconds; for tests.

Expected result (cpu): the BLEU1 expert writes short captions of precise words, the
ROUGE expert longer ones; the soups trace a front between them, model soups of two
seeds of one reward stay near that reward's expert, and prediction ensembling (N
forward passes per token) is the oracle the soups approximate.
"""

from __future__ import annotations

import dataclasses

from configs import given_model_budget, preset_config, pretrain_recipe, smoke_budget
from rs_jax.config import BudgetConfig, TaskConfig

BUDGET = BudgetConfig(
    pretrain_updates=1000,
    pretrain_learning_rate=1e-3,
    finetune_updates=100,
    finetune_learning_rate=1.5e-4,
    checkpoint_every=50,
)


@dataclasses.dataclass(frozen=True)
class CaptioningConfig(TaskConfig):
    rewards: tuple[str, ...] = ("bleu1", "rouge")
    model: str = ""  # a local HF VisionEncoderDecoder directory; "" builds a tiny ViT + GPT-2
    starting_point: str = ""  # a directory of python -m tasks.starting_points build; "" pre-trains in the run
    data: str = ""  # a Karpathy-split dataset_coco.json; "" uses the procedural scene world
    image_dir: str = ""  # root of the COCO images named by the JSON's filepath/filename
    max_images: int = 0  # real data: load at most this many training images (0: all)
    image_size: int = 32
    max_length: int = 24
    hidden_size: int = 96
    num_layers: int = 2
    num_heads: int = 4
    patch_size: int = 8
    budget: BudgetConfig = BUDGET
    pretrain_batch: int = 64
    images_per_update: int = 16
    num_samples: int = 5
    seeds_per_reward: int = 2
    morl_mus: tuple[float, ...] = (0.5,)
    decoding_mixing: bool = False  # MOD's front (N forward passes per token; README "Decoding-time mixing")
    extrapolation: tuple[float, ...] = (-0.2, 1.2)
    eval_images: int = 256
    cider_reference_scenes: int = 2048  # scene world: references that set CIDEr-D's document frequencies
    figure_scenes: int = 4


PRESETS: dict[str, CaptioningConfig] = {
    "cpu": CaptioningConfig(),
    "pretrain": CaptioningConfig(budget=pretrain_recipe(BUDGET, 30_000)),
    "paper": CaptioningConfig(
        rewards=("bleu1", "rouge"),
        image_size=224,
        patch_size=16,
        max_length=32,
        images_per_update=50,
        eval_images=5000,
        budget=given_model_budget(BUDGET, 5000, 1e-5, checkpoint_every=500),
    ),
    "smoke": CaptioningConfig(
        hidden_size=32,
        num_layers=1,
        max_length=12,
        pretrain_batch=8,
        images_per_update=2,
        num_samples=2,
        rs_points=3,
        extrapolation=(1.2,),
        eval_images=4,
        cider_reference_scenes=16,
        figure_scenes=2,
        budget=smoke_budget(BUDGET, checkpoint_every=1),
    ),
}


def get_config(preset: str = "cpu") -> CaptioningConfig:
    """The config of a preset (see the module docstring)."""
    return preset_config(PRESETS, preset)
