"""Text-to-image: reward-weighted diffusion fine-tuning, one expert per image reward (paper Appendix E,
Fig. 5a / 11 / 12, rebuttal Fig. 2).

    python -m tasks.diffusion                                  # preset "cpu" (default)
    python -m tasks.diffusion --set rewards=colourfulness,contrast,skin
    python -m tasks.diffusion --preset paper --set model=/path/to/stable-diffusion-v1-5 \
        rewards=learned,colourfulness,skin scorer=/path/ava_head.msgpack scorer_features=/path/clip-vit-l-14

Presets:
  cpu    the scene world's images, a tiny pixel-space UNet (32×32 images as 16×16×12
         space-to-depth samples, v-prediction) with a 1-layer CLIP text encoder, pre-trained for
         2000 updates on scene images with object-only prompts ("a red circle and a blue square"),
         so background and layout, which the rewards score, are the model's choice; 512 offline
         images from 10 DDIM steps, the best 50% kept per run; 200 updates of the UNet's
         cross-attention and bias/scale parameters; 3 experts (colourfulness, brightness and the
         "nsfw-like" skin antagonist) and MORL at μ = ½ of every pair and at the uniform μ, all
         vmapped as one program; about 11 minutes on 2 cores (see the README).
  pretrain  the cpu model pre-trained at length (25 000 updates, cosine step size): the recipe of
         a starting point (python -m tasks.starting_points build diffusion --preset pretrain).
  paper  a local Stable Diffusion directory (--set model=…; its own scheduler decides ε or v),
         10 000 offline images per the paper, 50 DDIM steps, guidance 7.5; for a GPU.
  smoke  seconds; for tests.

Expected result (cpu): each expert raises its own reward over the pre-trained init; brightness and
skin pull against each other (white vs brown and pink backgrounds: the antagonist of Fig. 11), the
soups trace the fronts between the experts (front.png: the first two, spider.png: all three) and
MORL at ½ of a pair lands near the soups; the Fréchet distance to the scene images (quality.png)
grows with fine-tuning, for soups, experts and MORL alike; samples.png shows the same prompts and
noise drawn by every λ.
"""

from __future__ import annotations

import dataclasses

from configs import given_model_budget, preset_config, pretrain_recipe, smoke_budget
from rs_jax.config import BudgetConfig, TaskConfig
from rs_jax.starting_points import SHIPPED

BUDGET = BudgetConfig(
    pretrain_updates=2000,
    pretrain_learning_rate=1e-3,
    finetune_updates=200,
    finetune_learning_rate=1e-3,
    checkpoint_every=500,
)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(TaskConfig):
    rewards: tuple[str, ...] = ("colourfulness", "brightness", "skin")  # see rs_jax.rewards.images
    model: str = ""  # a local Stable Diffusion directory; "" builds the tiny pixel-space model
    starting_point: str = ""  # a directory of python -m tasks.starting_points build; "" pre-trains in the run
    scorer: str = ""  # MLP head file of the "learned" reward (rs_jax.rewards.images.save_mlp_head)
    scorer_features: str = ""  # local CLIP vision directory for the learned head; "" random features
    image_size: int = 32
    patch_size: int = 2  # tiny model: space-to-depth factor of the pixel-space samples
    block_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention_heads: int = 2
    text_hidden_size: int = 32
    text_layers: int = 1
    max_objects: int = 3
    # Caption style of the prompts: 1 names the objects only ("a red circle and a blue square"),
    # leaving background and layout to the model, as an aesthetic reward needs; 0 is the
    # canonical caption (sizes, positions, background colour).
    prompt_style: int = 1
    # What the tiny model's UNet predicts: "v_prediction" | "epsilon" | "sample". An ε-model this
    # small samples noise after a CPU budget of pre-training (rs_jax.models.diffusion explains why).
    prediction_type: str = "v_prediction"
    uncond_probability: float = 0.1  # prompt dropout in pre-training (for guidance)
    guidance_scale: float = 1.0
    sampling_steps: int = 10
    budget: BudgetConfig = BUDGET
    pretrain_batch: int = 16
    offline_images: int = 512  # the paper generates 10 000
    generation_batch: int = 128
    keep_fraction: float = 0.5
    standardize_rewards: bool = True  # z-score each reward over the offline set before weighting
    finetune_batch: int = 8
    morl: bool = True  # MORL at μ = ½ of every pair of rewards and at the uniform μ
    rs_points: int = 4  # points per edge of the simplex grid (4: multiples of 1/3 for 3 experts)
    eval_prompts: int = 96
    feature_dim: int = 32  # random features of the Fréchet distance
    # objects drawn right: a directory of python -m rs_jax.rewards.object_classifier ("shipped": ours)
    classifier: str = SHIPPED
    reference_images: int = 1024  # scene images the Fréchet distance compares with
    figure_prompts: int = 6


PRESETS: dict[str, DiffusionConfig] = {
    "cpu": DiffusionConfig(),
    "pretrain": DiffusionConfig(budget=pretrain_recipe(BUDGET, 25_000)),
    "paper": DiffusionConfig(
        image_size=512,
        guidance_scale=7.5,
        sampling_steps=50,
        offline_images=10_000,
        generation_batch=16,
        finetune_batch=16,
        rs_points=5,
        eval_prompts=256,
        reference_images=2048,
        budget=given_model_budget(BUDGET, 2000, 1e-5, checkpoint_every=250),
    ),
    "smoke": DiffusionConfig(
        image_size=16,
        block_channels=(32,),
        attention_heads=1,
        text_hidden_size=16,
        max_objects=2,
        sampling_steps=2,
        pretrain_batch=4,
        offline_images=8,
        generation_batch=8,
        finetune_batch=2,
        morl=True,
        rs_points=2,
        eval_prompts=4,
        feature_dim=4,
        reference_images=8,
        figure_prompts=2,
        budget=smoke_budget(BUDGET),
    ),
}


def get_config(preset: str = "cpu") -> DiffusionConfig:
    """The config of a preset (see the module docstring)."""
    return preset_config(PRESETS, preset)
