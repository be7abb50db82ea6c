"""The unified image+text → tokens backbones of the grounding and VQA tasks, chosen by name.

``"vit-gpt2"`` is ``rs_jax.models.unified`` (ViT encoder, GPT-2 decoder reading the text as its
prompt); ``"bart"`` is ``rs_jax.models.bart_unified`` (BART encoder-decoder + ViT). Both modules
offer the same functions (``init_params``, ``sample_outputs``, ``token_log_probs``,
``location_cross_entropy``, ``word_mask``, ``vocab_size``, …), so a task holds the module and
calls it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax

from rs_jax.data.vocab import Vocabulary
from rs_jax.models import bart_unified, captioner, unified

BACKBONES = {"vit-gpt2": unified, "bart": bart_unified}


def select(backbone: str, model_dir: str = "", vision_dir: str = "") -> ModuleType:
    """The module of a backbone name, after checking the directories fit it.

    Raises:
      ValueError: on an unknown name, or directories that do not go with it.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}.")
    if vision_dir and not (backbone == "bart" and model_dir):
        raise ValueError("vision_model= is the ViT of backbone=bart with model=<BART directory>.")
    if backbone == "bart" and model_dir and not vision_dir:
        raise ValueError("backbone=bart with model=<BART directory> needs vision_model=<ViT directory>.")
    return BACKBONES[backbone]


def special_ids(module: ModuleType, model: Any) -> tuple[int, int, int]:
    """(decoder start, ``<eos>``, ``<pad>``) ids of a backbone's model."""
    return (bart_unified if module is bart_unified else captioner).special_ids(model)


def build_model(
    config: Any, vocabulary: Vocabulary, *, prompt_length: int, output_length: int
) -> tuple[ModuleType, Any, Any]:
    """The backbone module, its model and pre-trained params (None for a fresh tiny model).

    Args:
      config: a task config with ``backbone``, ``model``, ``vision_model``, ``seed`` and the tiny
        model's ``image_size``, ``patch_size``, ``hidden_size``, ``num_layers``, ``num_heads``,
        ``encoder_init_scale``.
      vocabulary: the task's tokens (a loaded model must have exactly this many).
      prompt_length / output_length: token budget of the tiny model's positions.

    Raises:
      ValueError: on a bad backbone choice or a loaded model whose vocabulary size differs.
    """
    module = select(config.backbone, config.model, config.vision_model)
    if config.model:
        if module is bart_unified:
            model, pretrained = bart_unified.load_bart_unified(
                config.model, config.vision_model, key=jax.random.PRNGKey(config.seed)
            )
        else:
            model, pretrained = captioner.load_captioner(config.model)
        if module.vocab_size(model) != vocabulary.size:
            raise ValueError(
                f"{config.model} has {module.vocab_size(model)} tokens; this task's vocabulary has "
                f"{vocabulary.size}."
            )
        return module, model, pretrained
    tiny = bart_unified.tiny_bart_unified if module is bart_unified else unified.tiny_unified_model
    model = tiny(
        vocabulary.size,
        prompt_length=prompt_length,
        output_length=output_length,
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        encoder_init_scale=config.encoder_init_scale,
        bos_id=vocabulary.bos_id,
        eos_id=vocabulary.eos_id,
        pad_id=vocabulary.pad_id,
    )
    return module, model, None
