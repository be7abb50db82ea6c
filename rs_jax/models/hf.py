"""Load and save Hugging Face Flax models from local directories (transformers 4.x).

No hub access: ``directory`` must already hold ``config.json`` and weights, either
Flax (``flax_model.msgpack``) or PyTorch-format (``model.safetensors``), which
transformers 4.57 converts to Flax without torch installed.
"""

from __future__ import annotations

import os
import types
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
    if (
        model_class.__name__ not in NEEDS_INIT
        and from_pt
        and os.path.exists(os.path.join(directory, PT_WEIGHTS[0]))
    ):
        return _load_pytorch_safetensors(directory)
    if model_class.__name__ in NEEDS_INIT:
        model = model_class.from_pretrained(directory, config=config, from_pt=from_pt, local_files_only=True)
        return model, model.params
    model, params = model_class.from_pretrained(
        directory, config=config, from_pt=from_pt, _do_init=False, local_files_only=True
    )
    return model, params


def _load_pytorch_safetensors(directory: str | os.PathLike) -> tuple[Any, PyTree]:
    """(model, params) from PyTorch-format ``model.safetensors``, without torch and without a
    random initialization: transformers' own PyTorch→Flax renaming
    (``convert_pytorch_state_dict_to_flax``) run against the model's parameter shapes.

    ``from_pretrained(from_pt=True, _do_init=False)`` fails in transformers 4.57 (it reads
    ``model.params``), and ``_do_init=True`` first builds random weights op by op (~10 s on
    CPU for the MiniLM, against ~0.5 s here).
    """
    import transformers
    from flax.core import unfreeze
    from flax.traverse_util import flatten_dict, unflatten_dict
    from safetensors import safe_open
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

    config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    model = flax_class_for(config)(config, _do_init=False)
    shapes = unfreeze(model.params_shape_tree)
    # numpy: the renaming's transposes stay on the host (jax arrays would compile one transpose
    # per shape); bfloat16, which numpy lacks, is read as a jax array.
    path = os.path.join(directory, PT_WEIGHTS[0])
    with safe_open(path, framework="numpy") as host, safe_open(path, framework="flax") as device:
        state = {
            name: (device if host.get_slice(name).get_dtype() == "BF16" else host).get_tensor(name)
            for name in host.keys()  # noqa: SIM118 (a safetensors handle, not a dict)
        }
    shim = types.SimpleNamespace(params=shapes, base_model_prefix=model.base_model_prefix)
    converted = flatten_dict(convert_pytorch_state_dict_to_flax(state, shim))
    expected = flatten_dict(shapes)
    missing = sorted("/".join(key) for key in expected.keys() - converted.keys())
    if missing:
        raise ValueError(f"{directory}/model.safetensors lacks {len(missing)} weights, e.g. {missing[:5]}.")
    for key, shape in expected.items():
        if converted[key].shape != shape.shape:
            raise ValueError(
                f"{directory}: weight {'/'.join(key)} has shape {converted[key].shape}, the config "
                f"says {shape.shape}."
            )
    return model, unflatten_dict({key: converted[key] for key in expected})


def save_flax_pretrained(model: Any, params: PyTree, directory: str | os.PathLike) -> None:
    """Writes ``params`` with ``model``'s config in HF Flax format (``save_pretrained``)."""
    model.save_pretrained(directory, params=params)
