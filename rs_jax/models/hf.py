"""Load and save Hugging Face Flax models from local directories (transformers 4.x).

No hub access: ``directory`` must already hold ``config.json`` and weights, either
Flax (``flax_model.msgpack``) or PyTorch-format (``model.safetensors``), which
transformers 4.57 converts to Flax without torch installed.
"""

from __future__ import annotations

import os
from typing import Any

PyTree = Any
FLAX_WEIGHTS = "flax_model.msgpack"
PT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Composite models that transformers cannot build without initializing random weights first.
NEEDS_INIT = ("FlaxVisionEncoderDecoderModel", "FlaxEncoderDecoderModel", "FlaxSpeechEncoderDecoderModel")


def is_hf_directory(directory: str | os.PathLike) -> bool:
    """True if ``directory`` has a config.json and Flax or PyTorch-format weights."""
    names = set(os.listdir(directory)) if os.path.isdir(directory) else set()
    return "config.json" in names and bool(names & {FLAX_WEIGHTS, *PT_WEIGHTS})


def flax_class_for(config: Any) -> type:
    """The transformers Flax class named by ``config.architectures[0]`` (Flax prefix added)."""
    import transformers

    architectures = getattr(config, "architectures", None) or []
    for name in architectures:
        flax_name = name if name.startswith("Flax") else "Flax" + name
        if hasattr(transformers, flax_name):
            return getattr(transformers, flax_name)
    return transformers.FlaxAutoModel._model_mapping[type(config)]


def load_flax_pretrained(directory: str | os.PathLike) -> tuple[Any, PyTree]:
    """Loads (model, params) from a local HF directory, without initializing random weights.

    Raises:
      ValueError: if the directory is not a HF model directory.
    """
    import transformers

    if not is_hf_directory(directory):
        raise ValueError(
            f"{directory} is not a Hugging Face model directory (needs config.json and "
            f"{FLAX_WEIGHTS} or {PT_WEIGHTS[0]})."
        )
    config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    model_class = flax_class_for(config)
    from_pt = not os.path.exists(os.path.join(directory, FLAX_WEIGHTS))
    if model_class.__name__ in NEEDS_INIT:
        model = model_class.from_pretrained(directory, config=config, from_pt=from_pt, local_files_only=True)
        return model, model.params
    model, params = model_class.from_pretrained(
        directory, config=config, from_pt=from_pt, _do_init=False, local_files_only=True
    )
    return model, params


def save_flax_pretrained(model: Any, params: PyTree, directory: str | os.PathLike) -> None:
    """Writes ``params`` with ``model``'s config in HF Flax format (``save_pretrained``)."""
    model.save_pretrained(directory, params=params)
