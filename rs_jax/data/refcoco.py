"""Loaders of RefCOCO / RefCOCO+ / RefCOCOg referring expressions (the refer API's files) and their
images. Nothing is downloaded; point them at files you have.

The refer API distributes, per dataset, ``refs(unc).p`` (``refs(umd).p`` for RefCOCOg), a
Python pickle of a list of refs::

    {"ref_id", "ann_id", "image_id", "split": "train"|"val"|"testA"|"testB"|"test",
     "sentences": [{"tokens": [...], "raw": "...", "sent": "...", "sent_id"}, ...], ...}

and ``instances.json``, COCO-style ``{"images": [{"id", "file_name", "width", "height"}],
"annotations": [{"id", "image_id", "bbox": [x, y, w, h]}, ...]}``. Each sentence is one
example: (image, expression, box). Boxes are converted from pixels to the 1000×1000 grid of
``rs_jax.models.locations`` with the image's width and height, so they stay right when images are
resized (``coco.load_images`` does not keep the aspect ratio either).

The pickle is read with an unpickler that refuses every class (refs hold only dicts, lists,
strings and numbers), so a tampered file cannot run code; Python 2 pickles are read with
``encoding="latin1"``. A ``.json`` refs file with the same list is accepted too.

>>> splits = load_refcoco("refcoco+/refs(unc).p", "refcoco+/instances.json",
...                       image_root="coco/train2014")  # doctest: +SKIP
>>> splits["val"].expressions[0], splits["val"].boxes[0]  # doctest: +SKIP
(('man', 'on', 'the', 'left'), array([ 12.3, 140.2, 420.8, 998.1], dtype=float32))
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from rs_jax.data import coco, files
from rs_jax.data.vocab import Vocabulary, tokenize

GRID = 1000.0


class _DataOnlyUnpickler(pickle.Unpickler):
    """Builds only built-in containers and scalars: any class reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: refs hold plain data only")


def _read_refs(path: str) -> Any:
    if path.endswith(".json"):
        return files.read_json(path)
    try:
        with open(path, "rb") as handle:
            return _DataOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a refs pickle of plain data ({error}).") from error
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error}).") from error


def _read_instances(path: str) -> tuple[dict[int, dict], dict[int, dict]]:
    """(image id -> image entry, annotation id -> annotation entry) of a COCO instances file."""
    data = files.read_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "annotations")
    ):
        raise ValueError(f'{path}: expected COCO instances, an object with "images" and "annotations" lists.')
    images, annotations = {}, {}
    for index, image in enumerate(data["images"]):
        files.check_record(image, ("id", "file_name", "width", "height"), f"{path}: images[{index}]")
        size = (image["width"], image["height"])
        if not all(isinstance(side, (int, float)) and side > 0 for side in size):
            raise ValueError(f"{path}: images[{index}] has width × height {size[0]!r} × {size[1]!r}.")
        images[int(image["id"])] = image
    for index, annotation in enumerate(data["annotations"]):
        bbox = annotation.get("bbox") if isinstance(annotation, dict) else None
        if (
            bbox is None
            or "id" not in annotation
            or not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(value, (int, float)) for value in bbox)
        ):
            raise ValueError(f"{path}: annotations[{index}] needs an 'id' and a numeric 'bbox' [x, y, w, h].")
        annotations[int(annotation["id"])] = annotation
    return images, annotations


def pixel_box_to_grid(bbox: Sequence[float], width: float, height: float) -> np.ndarray:
    """COCO ``[x, y, w, h]`` in pixels -> (4,) float32 x0, y0, x1, y1 on the 1000×1000 grid (clipped)."""
    x, y, w, h = (float(value) for value in bbox)
    box = np.array([x / width, y / height, (x + w) / width, (y + h) / height], np.float32) * GRID
    return np.clip(box, 0.0, GRID)


@dataclasses.dataclass(frozen=True)
class ReferringSplit:
    """One split of a referring-expression dataset, one row per expression.

    Attributes:
      name: the refs' split name ("train", "val", "testA", …).
      image_paths: the image of each expression (``image_root/file_name``).
      image_ids: the COCO id of each expression's image.
      ref_ids: the ref each expression belongs to (several expressions per ref).
      expressions: the expression's lower-cased words.
      boxes: (N, 4) float32 target box on the 1000×1000 grid.
    """

    name: str
    image_paths: tuple[str, ...]
    image_ids: tuple[int, ...]
    ref_ids: tuple[int, ...]
    expressions: tuple[tuple[str, ...], ...]
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.expressions)


def _sentence_words(sentence: Any, where: str) -> tuple[str, ...]:
    if isinstance(sentence, dict):
        if isinstance(sentence.get("tokens"), list):
            return tuple(str(word).lower() for word in sentence["tokens"])
        for key in ("sent", "raw"):
            if isinstance(sentence.get(key), str):
                return tuple(tokenize(sentence[key]))
    raise ValueError(f"{where} has no 'tokens' list, 'sent' or 'raw' string.")


def load_refcoco(
    refs_path: str | os.PathLike,
    instances_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    splits: Sequence[str] | None = None,
) -> dict[str, ReferringSplit]:
    """Reads refs and instances into one ``ReferringSplit`` per split, in file order.

    Args:
      refs_path: ``refs(unc).p`` (or a ``.json`` list of the same refs).
      instances_path: the dataset's ``instances.json``.
      image_root: folder of the images' ``file_name``; default: the instances file's folder.
      splits: keep only these splits (each must have at least one expression); default: all.

    Raises:
      ValueError: naming the file, entry and problem for unreadable files, missing keys, refs
        whose annotation or image is not in the instances file, or a requested empty split.
    """
    refs_path, instances_path = os.fspath(refs_path), os.fspath(instances_path)
    image_root = os.path.dirname(instances_path) if image_root is None else os.fspath(image_root)
    refs = _read_refs(refs_path)
    if not isinstance(refs, list):
        raise ValueError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}.")
    images, annotations = _read_instances(instances_path)
    collected: dict[str, dict[str, list]] = {}
    for index, ref in enumerate(refs):
        where = f"{refs_path}: refs[{index}]"
        files.check_record(ref, ("ann_id", "image_id", "split", "sentences"), where)
        if splits is not None and ref["split"] not in splits:
            continue
        if not isinstance(ref["sentences"], list):
            raise ValueError(f"{where}: 'sentences' is not a list.")
        annotation = annotations.get(int(ref["ann_id"]))
        if annotation is None:
            raise ValueError(f"{where}: annotation {ref['ann_id']} is not in {instances_path}.")
        image = images.get(int(ref["image_id"]))
        if image is None:
            raise ValueError(f"{where}: image {ref['image_id']} is not in {instances_path}.")
        box = pixel_box_to_grid(annotation["bbox"], image["width"], image["height"])
        rows = collected.setdefault(
            str(ref["split"]), {"paths": [], "image_ids": [], "ref_ids": [], "words": [], "boxes": []}
        )
        for s, sentence in enumerate(ref["sentences"]):
            rows["words"].append(_sentence_words(sentence, f"{where}.sentences[{s}]"))
            rows["paths"].append(os.path.join(image_root, image["file_name"]))
            rows["image_ids"].append(int(ref["image_id"]))
            rows["ref_ids"].append(int(ref.get("ref_id", index)))
            rows["boxes"].append(box)
    empty = [name for name in (splits or ()) if name not in collected]
    if empty:
        raise ValueError(f"{refs_path}: no expressions in split(s) {', '.join(empty)}.")
    return {
        name: ReferringSplit(
            name=name,
            image_paths=tuple(rows["paths"]),
            image_ids=tuple(rows["image_ids"]),
            ref_ids=tuple(rows["ref_ids"]),
            expressions=tuple(rows["words"]),
            boxes=np.asarray(rows["boxes"], np.float32).reshape(-1, 4),
        )
        for name, rows in collected.items()
    }


@dataclasses.dataclass(frozen=True)
class ReferringArrays:
    """One split in arrays (``load_refcoco_arrays``); images are stored once per image.

    Attributes:
      images: (I, H, W, 3) float32 in [0, 1], the split's distinct images.
      image_index: (N,) int32, the image of each expression.
      expressions: (N, L) int32 token ids (``<eos>``-ended, ``<pad>``-padded).
      boxes: (N, 4) float32 on the 1000×1000 grid.
      split: the ``ReferringSplit`` (paths, words), cut to ``max_expressions``.
    """

    images: np.ndarray
    image_index: np.ndarray
    expressions: np.ndarray
    boxes: np.ndarray
    split: ReferringSplit


def split_arrays(
    split: ReferringSplit,
    vocabulary: Vocabulary,
    *,
    image_size: int | tuple[int, int],
    max_length: int,
    max_expressions: int | None = None,
) -> ReferringArrays:
    """Encodes a split's expressions and loads its images (each distinct image once)."""
    count = len(split) if max_expressions is None else min(len(split), max_expressions)
    split = ReferringSplit(
        split.name,
        split.image_paths[:count],
        split.image_ids[:count],
        split.ref_ids[:count],
        split.expressions[:count],
        split.boxes[:count],
    )
    images, image_index = coco.load_images_once(split.image_paths, image_size)
    return ReferringArrays(
        images=images,
        image_index=image_index,
        expressions=vocabulary.encode_batch(split.expressions, max_length),
        boxes=split.boxes,
        split=split,
    )


def load_refcoco_arrays(
    refs_path: str | os.PathLike,
    instances_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    image_size: int | tuple[int, int],
    max_length: int,
    train_split: str = "train",
    eval_split: str = "val",
    min_count: int = 1,
    max_expressions: int | None = None,
) -> tuple[Vocabulary, ReferringArrays, ReferringArrays]:
    """``load_refcoco`` + a vocabulary of the training expressions + both splits in arrays.

    Returns:
      (vocabulary of the words only — add location tokens with
      ``rs_jax.data.vocab.with_location_tokens`` —, train arrays, evaluation arrays).
    """
    splits = load_refcoco(refs_path, instances_path, image_root, splits=(train_split, eval_split))
    vocabulary = Vocabulary.build(splits[train_split].expressions, min_count)
    arrays = [
        split_arrays(
            splits[name],
            vocabulary,
            image_size=image_size,
            max_length=max_length,
            max_expressions=max_expressions,
        )
        for name in (train_split, eval_split)
    ]
    return vocabulary, arrays[0], arrays[1]
