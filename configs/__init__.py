"""One config per task, ``configs/<task>.py``, with presets (``cpu`` default, ``paper`` for a GPU),
the preset values the unified vision-language tasks (grounding, VQA) share, and the budgets of
the ``pretrain``, ``smoke`` and given-model presets."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from rs_jax.config import BudgetConfig, TaskConfig

ConfigT = TypeVar("ConfigT", bound=TaskConfig)


def preset_config(presets: Mapping[str, ConfigT], preset: str) -> ConfigT:
    """The config named ``preset`` in a task's ``PRESETS``; a ``ValueError`` naming the choices
    for any other name (configs are frozen: presets are shared, never mutated)."""
    if preset not in presets:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {tuple(presets)}.")
    return presets[preset]


@dataclasses.dataclass(frozen=True)
class UnifiedModelConfig(TaskConfig):
    """The backbone fields of a unified ViT + text-model task config (``configs/grounding.py``,
    ``configs/vqa.py``; what ``rs_jax.models.backbones.build_model`` reads): the backbone, local HF
    directories ("" builds a tiny model) and the tiny model's sizes."""

    backbone: str = "vit-gpt2"  # "vit-gpt2" (rs_jax.models.unified) or "bart" (rs_jax.models.bart_unified)
    model: str = ""  # a local HF directory with this vocabulary (vit-gpt2: a VisionEncoderDecoder;
    # bart: a BartForConditionalGeneration); "" builds a tiny one
    vision_model: str = ""  # bart with model=: a local HF ViT / CLIP-vision directory
    starting_point: str = ""  # a directory of python -m tasks.starting_points build; "" pre-trains in the run
    image_size: int = 32
    patch_size: int = 8
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    encoder_init_scale: float = 1.0  # ViT initializer_range (see rs_jax.models.unified)


def pretrain_recipe(budget: BudgetConfig, updates: int) -> BudgetConfig:
    """The budget of a task's ``pretrain`` preset, the recipe of its shipped starting point
    (``python -m tasks.starting_points build <task> --preset pretrain``): ``budget`` with
    ``updates`` pre-training updates, a cosine step size and a checkpoint every 2000 updates."""
    return dataclasses.replace(budget, pretrain_updates=updates, pretrain_cosine=True, checkpoint_every=2000)


def given_model_budget(
    budget: BudgetConfig, finetune_updates: int, finetune_learning_rate: float, checkpoint_every: int
) -> BudgetConfig:
    """The budget of a preset whose pre-trained model is given (``--set model=…``): ``budget``
    without pre-training, with that fine-tuning and checkpoint interval."""
    return dataclasses.replace(
        budget,
        pretrain_updates=0,
        finetune_updates=finetune_updates,
        finetune_learning_rate=finetune_learning_rate,
        checkpoint_every=checkpoint_every,
    )


def smoke_budget(budget: BudgetConfig, **fields: Any) -> BudgetConfig:
    """The budget of a ``smoke`` preset: ``budget`` with 2 pre-training and 2 fine-tuning updates,
    a checkpoint at each phase's end (``checkpoint_every=0``), then ``fields`` replaced."""
    return dataclasses.replace(
        budget, **({"pretrain_updates": 2, "finetune_updates": 2, "checkpoint_every": 0} | fields)
    )


def unified_preset(preset: str, budget: BudgetConfig) -> dict[str, Any]:
    """The config fields a unified ViT + text-model task (``configs/grounding.py``, ``configs/vqa.py``)
    sets the same way in its ``"paper"`` or ``"smoke"`` preset: the model sizes, the batch sizes and
    the task's ``budget`` with that preset's updates.

    Raises:
      ValueError: on another preset.
    """
    if preset == "paper":
        sizes = {"image_size": 224, "patch_size": 16, "hidden_size": 384, "num_layers": 6, "num_heads": 6}
        batches = {"pretrain_batch": 128, "images_per_update": 32, "num_samples": 5}
        budget = dataclasses.replace(
            budget,
            pretrain_updates=20_000,
            pretrain_learning_rate=1e-4,
            finetune_updates=5000,
            finetune_learning_rate=1e-5,
            checkpoint_every=1000,
        )
    elif preset == "smoke":
        sizes = {"image_size": 16, "hidden_size": 16, "num_layers": 1, "num_heads": 2}
        batches = {"pretrain_batch": 4, "images_per_update": 2, "num_samples": 2}
        budget = smoke_budget(budget)
    else:
        raise ValueError(f"No unified-task values for preset {preset!r}; there are for 'paper' and 'smoke'.")
    return {**sizes, **batches, "budget": budget}
