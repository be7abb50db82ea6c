"""Loaders of real captioning data: the Karpathy split files (``dataset_coco.json``, also the
Flickr8k/30k ones) and their images. Nothing is downloaded; point them at files you have.

A Karpathy file is ``{"images": [{"filepath", "filename", "split", "cocoid", "sentences":
[{"tokens": [...], "raw": "..."}, ...]}, ...]}`` with ``split`` in train/restval/val/test.
``restval`` is merged into ``train`` (the usual 113k-image training set).

>>> splits = load_karpathy("data/coco/dataset_coco.json", image_root="data/coco")  # doctest: +SKIP
>>> vocab = build_vocabulary(splits["train"], min_count=5)  # doctest: +SKIP
>>> ids, valid = encode_captions(splits["val"].captions, vocab, max_length=20)  # doctest: +SKIP
>>> images = load_images(splits["val"].image_paths[:8], image_size=224)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from rs_jax.data import files
from rs_jax.data.vocab import PAD_ID, Vocabulary, tokenize

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "restval": "train", "val": "val", "test": "test"}

Captions = tuple[tuple[tuple[str, ...], ...], ...]


@dataclasses.dataclass(frozen=True)
class CaptionSplit:
    """One split of a captioning dataset.

    Attributes:
      name: "train", "val" or "test".
      image_paths: path of each image (``image_root/filepath/filename``).
      image_ids: the dataset's id of each image (``cocoid``, else ``imgid``, else -1).
      captions: per image, its reference captions, each a tuple of lower-cased words.
    """

    name: str
    image_paths: tuple[str, ...]
    image_ids: tuple[int, ...]
    captions: Captions

    def __len__(self) -> int:
        return len(self.image_paths)


def _sentence_words(sentence: object, where: str) -> tuple[str, ...]:
    if not isinstance(sentence, dict):
        raise ValueError(f"{where} is not an object.")
    if isinstance(sentence.get("tokens"), list):
        return tuple(str(word).lower() for word in sentence["tokens"])
    if isinstance(sentence.get("raw"), str):
        return tuple(tokenize(sentence["raw"]))
    raise ValueError(f"{where} has neither a 'tokens' list nor a 'raw' string.")


def load_karpathy(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    required_splits: Sequence[str] = SPLITS,
) -> dict[str, CaptionSplit]:
    """Reads a Karpathy split file into train/val/test (restval merged into train).

    Args:
      path: the JSON file.
      image_root: folder the entries' ``filepath/filename`` are relative to; default: the
        JSON file's folder.
      required_splits: splits that must have at least one image.

    Returns:
      {"train", "val", "test"} -> ``CaptionSplit`` (in file order).

    Raises:
      ValueError: naming the file and the problem, if it is not valid JSON, lacks keys, has an
        unknown split, or a required split is empty.
    """
    path = os.fspath(path)
    image_root = os.path.dirname(path) if image_root is None else os.fspath(image_root)
    data = files.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f'{path}: expected a Karpathy split file, an object with an "images" list.')

    collected: dict[str, tuple[list[str], list[int], list[tuple[tuple[str, ...], ...]]]] = {
        name: ([], [], []) for name in SPLITS
    }
    for index, entry in enumerate(data["images"]):
        where = f"{path}: images[{index}]"
        files.check_record(entry, ("filename", "split", "sentences"), where)
        split = _SPLIT_ALIASES.get(entry["split"])
        if split is None:
            raise ValueError(
                f"{where} has split {entry['split']!r}; expected one of {sorted(_SPLIT_ALIASES)}."
            )
        if not isinstance(entry["sentences"], list):
            raise ValueError(f"{where}: 'sentences' is not a list.")
        paths, ids, captions = collected[split]
        paths.append(os.path.join(image_root, entry.get("filepath", ""), entry["filename"]))
        try:
            ids.append(int(entry.get("cocoid", entry.get("imgid", -1))))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: 'cocoid' is not an integer ({error}).") from error
        captions.append(
            tuple(
                _sentence_words(sentence, f"{where}.sentences[{s}]")
                for s, sentence in enumerate(entry["sentences"])
            )
        )

    empty = [name for name in required_splits if not collected[name][0]]
    if empty:
        raise ValueError(f"{path}: no images in split(s) {', '.join(empty)} (restval counts as train).")
    return {
        name: CaptionSplit(
            name=name, image_paths=tuple(paths), image_ids=tuple(ids), captions=tuple(captions)
        )
        for name, (paths, ids, captions) in collected.items()
    }


def build_vocabulary(split: CaptionSplit, min_count: int = 5, max_size: int | None = None) -> Vocabulary:
    """A vocabulary of the words of a split's captions seen at least ``min_count`` times."""
    return Vocabulary.build((words for refs in split.captions for words in refs), min_count, max_size)


def encode_captions(
    captions: Captions, vocab: Vocabulary, max_length: int, num_refs: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pads every image's references to one array.

    Args:
      captions: per image, its references as word lists (``CaptionSplit.captions``).
      vocab: the vocabulary (unknown words -> ``<unk>``).
      max_length: L tokens per caption incl. ``<eos>`` (longer captions are cut).
      num_refs: K references per image; default: the most any image has. Images with more keep
        their first K.

    Returns:
      (N, K, L) int32 token ids (missing references are all ``<pad>``), (N, K) bool valid mask.
    """
    num_refs = max((len(refs) for refs in captions), default=0) if num_refs is None else num_refs
    ids = np.full((len(captions), num_refs, max_length), PAD_ID, np.int32)
    valid = np.zeros((len(captions), num_refs), bool)
    for image, refs in enumerate(captions):
        for ref, words in enumerate(refs[:num_refs]):
            ids[image, ref] = vocab.encode(list(words), max_length)
            valid[image, ref] = True
    return ids, valid


def load_images(paths: Sequence[str | os.PathLike], image_size: int | tuple[int, int]) -> np.ndarray:
    """Loads images as RGB, resized (bicubic, aspect not kept) to ``image_size``.

    Args:
      paths: image files.
      image_size: H = W, or (H, W), in pixels.

    Returns:
      (N, H, W, 3) float32 in [0, 1].
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    images = np.zeros((len(paths), height, width, 3), np.float32)
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                resized = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
        except (OSError, ValueError) as error:
            raise ValueError(f"{os.fspath(path)}: cannot read the image ({error}).") from error
        images[index] = np.asarray(resized, np.float32) / 255.0
    return images


def load_images_once(
    paths: Sequence[str | os.PathLike], image_size: int | tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Loads each distinct image of ``paths`` once (``load_images``).

    Returns:
      (D, H, W, 3) float32 images in [0, 1] of the D distinct paths in first-seen order, and the
      (len(paths),) int32 index of each path's image among them.
    """
    distinct = list(dict.fromkeys(paths))
    position = {path: index for index, path in enumerate(distinct)}
    return load_images(distinct, image_size), np.array([position[path] for path in paths], np.int32)


@dataclasses.dataclass(frozen=True)
class CaptionArrays:
    """A Karpathy dataset loaded into arrays (``load_karpathy_arrays``).

    Attributes:
      vocabulary: built from the train captions.
      train_images, val_images, test_images: (N, H, W, 3) float32 in [0, 1].
      train_captions, val_captions, test_captions: (N, K, L) int32 token ids, all-pad rows for
        missing references.
      train_valid, val_valid, test_valid: (N, K) bool, the reference exists.
      splits: the ``CaptionSplit``s the arrays come from (paths, ids, words), cut to ``max_images``.
    """

    vocabulary: Vocabulary
    train_images: np.ndarray
    train_captions: np.ndarray
    train_valid: np.ndarray
    val_images: np.ndarray
    val_captions: np.ndarray
    val_valid: np.ndarray
    test_images: np.ndarray
    test_captions: np.ndarray
    test_valid: np.ndarray
    splits: dict[str, CaptionSplit]


def load_karpathy_arrays(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    image_size: int | tuple[int, int],
    max_length: int,
    min_count: int = 5,
    num_refs: int = 5,
    max_images: int | None = None,
) -> CaptionArrays:
    """``load_karpathy`` + ``build_vocabulary`` (train) + ``encode_captions`` + ``load_images``.

    Every image is decoded into memory (COCO's 113k train images at 224² take ~68 GB as float32):
    ``max_images`` keeps the first N images of each split.

    Args:
      path: the Karpathy JSON file.
      image_root: folder of the images' ``filepath/filename``; default: the JSON file's folder.
      image_size: H = W, or (H, W), in pixels.
      max_length: L tokens per caption incl. ``<eos>``.
      min_count: vocabulary words occur at least this often in the train captions.
      num_refs: K references per image (COCO images have 5, a few 6-7).
      max_images: optional cap on the images of each split.
    """
    splits = load_karpathy(path, image_root)
    if max_images is not None:
        splits = {
            name: CaptionSplit(
                name,
                split.image_paths[:max_images],
                split.image_ids[:max_images],
                split.captions[:max_images],
            )
            for name, split in splits.items()
        }
    vocabulary = build_vocabulary(splits["train"], min_count)
    arrays = {}
    for name, split in splits.items():
        captions, valid = encode_captions(split.captions, vocabulary, max_length, num_refs)
        arrays[f"{name}_images"] = load_images(split.image_paths, image_size)
        arrays[f"{name}_captions"] = captions
        arrays[f"{name}_valid"] = valid
    return CaptionArrays(vocabulary=vocabulary, splits=splits, **arrays)
