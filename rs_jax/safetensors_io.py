"""Read and write safetensors checkpoints one tensor at a time (Hugging Face PyTorch format).

A model directory holds ``model.safetensors``, or shards listed by
``model.safetensors.index.json`` (``{"metadata": {"total_size": bytes}, "weight_map":
{tensor name: shard file}}``); a PEFT adapter holds ``adapter_model.safetensors``.
``read_layout`` reads only the headers; ``TensorReader`` reads one tensor at a time
(safetensors memory-maps the files, numpy arrays come back, BF16 as ``ml_dtypes.bfloat16``);
``write_safetensors`` writes a file from a header known in advance and tensors produced
one at a time, so a merge holds one output tensor, never a whole shard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

MODEL_WEIGHTS = "model.safetensors"
MODEL_INDEX = "model.safetensors.index.json"
# safetensors dtype codes <-> numpy dtypes (ml_dtypes for bfloat16 and float8).
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
CODES = {dtype: code for code, dtype in DTYPES.items()}
# Files of a model directory that are weights (never copied beside a merged model).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".h5", ".pt", ".pth", ".ckpt", ".gguf", ".index.json")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Where one tensor lives and what it is.

    Attributes:
      file: shard file name, relative to the directory.
      shape: the tensor's shape.
      dtype: its numpy dtype.
    """

    file: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclasses.dataclass(frozen=True)
class Layout:
    """The tensors of a safetensors checkpoint, read from its headers.

    Attributes:
      directory: the checkpoint directory.
      tensors: {tensor name: spec}, shard by shard in the order of ``files``.
      files: shard file names in order (one entry when not sharded).
      metadata: the ``__metadata__`` of the first file (e.g. ``{"format": "pt"}``).
      sharded: True if the tensors are listed by an index file.
    """

    directory: str
    tensors: dict[str, TensorSpec]
    files: tuple[str, ...]
    metadata: dict[str, str]
    sharded: bool

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec in self.tensors.values())


def has_model_weights(directory: str | os.PathLike) -> bool:
    """True if ``directory`` has ``model.safetensors`` or its sharded index."""
    return any(os.path.isfile(os.path.join(directory, name)) for name in (MODEL_WEIGHTS, MODEL_INDEX))


def _read_header(directory: str, file: str) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    path = os.path.join(directory, file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory} lacks {file}.")
    try:
        with safe_open(path, framework="numpy") as handle:
            specs = {}
            for name in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                tensor = handle.get_slice(name)
                code = tensor.get_dtype()
                if code not in DTYPES:
                    raise ValueError(
                        f"{path}: tensor {name} has dtype {code}, which this reader does not know."
                    )
                specs[name] = TensorSpec(file, tuple(tensor.get_shape()), DTYPES[code])
            return specs, dict(handle.metadata() or {})
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}).") from error


def read_layout(directory: str | os.PathLike, weights: str = MODEL_WEIGHTS) -> Layout:
    """Reads the tensor names, shapes and dtypes of a checkpoint (headers only).

    Args:
      directory: a directory with ``weights`` or, for ``model.safetensors``, its index file.
      weights: the single-file name (``model.safetensors``, ``adapter_model.safetensors``).

    Raises:
      FileNotFoundError: no weights file, or a shard named by the index is missing.
      ValueError: an unreadable file or index, or an index that disagrees with its shards.
    """
    where = os.fspath(directory)
    index_path = os.path.join(where, weights + ".index.json")
    if os.path.isfile(os.path.join(where, weights)) or not os.path.isfile(index_path):
        tensors, metadata = _read_header(where, weights)
        return Layout(where, tensors, (weights,), metadata, sharded=False)
    try:
        with open(index_path) as handle:
            weight_map = json.load(handle)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{index_path} is not a safetensors index with a weight_map ({error}).") from error
    files = tuple(dict.fromkeys(weight_map.values()))
    tensors: dict[str, TensorSpec] = {}
    metadata: dict[str, str] = {}
    for file in files:
        specs, file_metadata = _read_header(where, file)
        metadata = metadata or file_metadata
        listed = {name for name, shard in weight_map.items() if shard == file}
        if listed != set(specs):
            extra = sorted(listed.symmetric_difference(specs))
            raise ValueError(f"{index_path} and {file} disagree on {len(extra)} tensors, e.g. {extra[:3]}.")
        tensors.update(specs)
    return Layout(where, tensors, files, metadata, sharded=True)


class TensorReader(contextlib.AbstractContextManager):
    """Reads tensors of one checkpoint by name, keeping its files open (memory-mapped)."""

    def __init__(self, layout: Layout):
        self._layout = layout
        self._stack = contextlib.ExitStack()
        self._handles: dict[str, object] = {}

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array (a copy; bf16 as ``ml_dtypes.bfloat16``)."""
        spec = self._layout.tensors[name]
        if spec.file not in self._handles:
            path = os.path.join(self._layout.directory, spec.file)
            self._handles[spec.file] = self._stack.enter_context(safe_open(path, framework="numpy"))
        return self._handles[spec.file].get_tensor(name)


def write_safetensors(
    path: str | os.PathLike,
    specs: dict[str, tuple[tuple[int, ...], np.dtype]],
    produce: Callable[[str], np.ndarray],
    metadata: dict[str, str] | None = None,
) -> int:
    """Writes a safetensors file whose tensors are produced one at a time.

    Args:
      path: the new file.
      specs: {name: (shape, dtype)}, in the order the tensors are laid out and produced.
      produce: called once per name, in order; returns the tensor (its shape and dtype must
        match ``specs``).
      metadata: the header's ``__metadata__`` (transformers wants ``{"format": "pt"}``).

    Returns:
      The bytes of tensor data written.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, (shape, dtype) in specs.items():
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {
            "dtype": CODES[np.dtype(dtype)],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for name, (shape, dtype) in specs.items():
            array = np.ascontiguousarray(produce(name))
            if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
                raise ValueError(
                    f"Tensor {name} came out {array.shape} {array.dtype}, expected {shape} {dtype}."
                )
            handle.write(memoryview(array.reshape(-1).view(np.uint8)))
    return offset


def write_like(
    layout: Layout,
    directory: str,
    produce: Callable[[str], np.ndarray],
    dtype_of: Callable[[TensorSpec], np.dtype],
) -> None:
    """Writes tensors named and sharded like ``layout`` into ``directory``, one at a time.

    Args:
      layout: the checkpoint whose names, shapes, shards and metadata the output copies.
      directory: an existing output directory; gets the shards (and the index when sharded).
      produce: the tensor of a name, called once per tensor in layout order.
      dtype_of: the output dtype of a tensor, from its spec.
    """
    weight_map: dict[str, str] = {}
    total = 0
    for file in layout.files:
        specs = {
            name: (spec.shape, dtype_of(spec)) for name, spec in layout.tensors.items() if spec.file == file
        }
        total += write_safetensors(
            os.path.join(directory, file), specs, produce, layout.metadata or {"format": "pt"}
        )
        weight_map.update(dict.fromkeys(specs, file))
    if layout.sharded:
        with open(os.path.join(directory, MODEL_INDEX), "w") as handle:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, handle, indent=2)


def copy_side_files(source: str, target: str, skip: Sequence[str] = ()) -> list[str]:
    """Copies every file of ``source`` that is not weights (config, tokenizer, ...) into ``target``."""
    copied = []
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if os.path.isfile(path) and not name.endswith(WEIGHT_SUFFIXES) and name not in skip:
            shutil.copy2(path, os.path.join(target, name))
            copied.append(name)
    return copied


@contextlib.contextmanager
def staged_directory(out: str | os.PathLike) -> Iterator[str]:
    """A fresh folder beside ``out`` that becomes ``out`` on success and is removed on failure.

    ``out`` must not exist or be an empty directory (``checkpoint.check_fresh_output``).
    """
    target = os.path.abspath(os.fspath(out))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.staging-", dir=os.path.dirname(target))
    try:
        yield staging
        if os.path.isdir(target):
            os.rmdir(target)  # empty, checked before the merge started
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
