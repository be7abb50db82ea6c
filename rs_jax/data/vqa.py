"""Loaders of VQAv2 questions and annotations (the official JSON files) and their images.
Nothing is downloaded; point them at files you have.

``v2_OpenEnded_mscoco_<subtype>_questions.json`` is ``{"data_subtype": "val2014", "questions":
[{"question_id", "image_id", "question"}, ...]}`` and ``v2_mscoco_<subtype>_annotations.json``
is ``{"annotations": [{"question_id", "image_id", "multiple_choice_answer", "answers":
[{"answer", "answer_id", ...} × 10], "answer_type", ...}, ...]}``. Images are
``image_root/COCO_<subtype>_<image_id:012d>.jpg`` by default (``image_template``).

The reference answers of a question are its 10 human answers with one copy of the most common
answer (``multiple_choice_answer``) moved first, so ``references[:, 0]`` is the canonical
answer (exact-match accuracy) and all rows together give the VQA accuracy
min(#humans who gave the answer / 3, 1) (``rs_jax.rewards.answers``).

>>> data = load_vqa("v2_OpenEnded_mscoco_val2014_questions.json",
...                 "v2_mscoco_val2014_annotations.json", image_root="coco/val2014")  # doctest: +SKIP
>>> data.questions[0], data.answers[0][0]  # doctest: +SKIP
(('what', 'is', 'the', 'man', 'holding', '?'), ('frisbee',))
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rs_jax.data import coco, files
from rs_jax.data.vocab import PAD_ID, Vocabulary, tokenize

DEFAULT_IMAGE_TEMPLATE = "COCO_{subtype}_{image_id:012d}.jpg"


def _read_json(path: str, key: str, what: str) -> tuple[dict, list]:
    data = files.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f'{path}: expected VQA {what}, an object with a "{key}" list.')
    return data, data[key]


def most_common_answer(answers: Sequence[str]) -> str:
    """The answer given most often (ties: the one given first); what VQAv2 calls
    ``multiple_choice_answer`` when the file lacks it."""
    if not answers:
        raise ValueError("A question needs at least one answer.")
    counts = collections.Counter(answers)
    best = max(counts.values())
    return next(answer for answer in answers if counts[answer] == best)


@dataclasses.dataclass(frozen=True)
class VQASplit:
    """VQA questions with their answers, one row per question.

    Attributes:
      image_paths / image_ids: the image of each question.
      question_ids: VQAv2's question ids.
      questions: lower-cased words of each question.
      answers: per question, its reference answers as word tuples, the most common one first.
      answer_types: VQAv2's "yes/no", "number" or "other" ("" when absent).
    """

    image_paths: tuple[str, ...]
    image_ids: tuple[int, ...]
    question_ids: tuple[int, ...]
    questions: tuple[tuple[str, ...], ...]
    answers: tuple[tuple[tuple[str, ...], ...], ...]
    answer_types: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.questions)


def _answer_texts(annotation: Any, where: str) -> tuple[list[str], str]:
    answers = annotation.get("answers")
    if not isinstance(answers, list) or not answers:
        raise ValueError(f"{where} has no 'answers' list.")
    texts = []
    for a, answer in enumerate(answers):
        if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
            raise ValueError(f"{where}.answers[{a}] has no 'answer' string.")
        texts.append(answer["answer"])
    canonical = annotation.get("multiple_choice_answer")
    if not isinstance(canonical, str):
        canonical = most_common_answer(texts)
    return texts, canonical


def load_vqa(
    questions_path: str | os.PathLike,
    annotations_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    image_template: str = DEFAULT_IMAGE_TEMPLATE,
    subtype: str | None = None,
) -> VQASplit:
    """Reads a VQAv2 questions file and its annotations file, in the questions' order.

    Args:
      questions_path / annotations_path: the two JSON files of one subtype (e.g. val2014).
      image_root: folder of the images; default: the questions file's folder.
      image_template: file name of an image, formatted with ``subtype`` and ``image_id``.
      subtype: e.g. "val2014"; default: the questions file's ``data_subtype``.

    Raises:
      ValueError: naming the file, entry and problem (invalid JSON, missing keys, a question
        without annotation, an annotation without answers, no subtype for the image names).
    """
    questions_path, annotations_path = os.fspath(questions_path), os.fspath(annotations_path)
    image_root = os.path.dirname(questions_path) if image_root is None else os.fspath(image_root)
    header, questions = _read_json(questions_path, "questions", "questions")
    _, annotations = _read_json(annotations_path, "annotations", "annotations")
    subtype = subtype or header.get("data_subtype")
    if subtype is None and "{subtype" in image_template:
        raise ValueError(f"{questions_path} has no 'data_subtype'; pass subtype= (e.g. 'val2014').")
    by_question = {}
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or "question_id" not in annotation:
            raise ValueError(f"{annotations_path}: annotations[{index}] has no 'question_id'.")
        by_question[int(annotation["question_id"])] = (index, annotation)
    rows: dict[str, list] = {
        key: [] for key in ("paths", "image_ids", "question_ids", "words", "answers", "types")
    }
    for index, question in enumerate(questions):
        where = f"{questions_path}: questions[{index}]"
        files.check_record(question, ("question_id", "image_id", "question"), where)
        found = by_question.get(int(question["question_id"]))
        if found is None:
            raise ValueError(
                f"{where}: question {question['question_id']} has no annotation in {annotations_path}."
            )
        annotation_index, annotation = found
        texts, canonical = _answer_texts(annotation, f"{annotations_path}: annotations[{annotation_index}]")
        if canonical in texts:  # one copy of the canonical answer goes first
            texts.remove(canonical)
        image_id = int(question["image_id"])
        rows["paths"].append(
            os.path.join(image_root, image_template.format(subtype=subtype, image_id=image_id))
        )
        rows["image_ids"].append(image_id)
        rows["question_ids"].append(int(question["question_id"]))
        rows["words"].append(tuple(tokenize(str(question["question"]))))
        rows["answers"].append(tuple(tuple(tokenize(text)) for text in [canonical, *texts]))
        rows["types"].append(str(annotation.get("answer_type", "")))
    return VQASplit(
        image_paths=tuple(rows["paths"]),
        image_ids=tuple(rows["image_ids"]),
        question_ids=tuple(rows["question_ids"]),
        questions=tuple(rows["words"]),
        answers=tuple(rows["answers"]),
        answer_types=tuple(rows["types"]),
    )


@dataclasses.dataclass(frozen=True)
class VQAArrays:
    """A VQA split in arrays (``vqa_arrays``); images are stored once per image.

    Attributes:
      images: (I, H, W, 3) float32 in [0, 1], the distinct images.
      image_index: (N,) int32, the image of each question.
      questions: (N, Lq) int32 token ids.
      answers: (N, A, La) int32 reference answers, the canonical one first; missing ones all pad.
      split: the ``VQASplit`` the arrays come from, cut to ``max_questions``.
    """

    images: np.ndarray
    image_index: np.ndarray
    questions: np.ndarray
    answers: np.ndarray
    split: VQASplit


def vqa_arrays(
    split: VQASplit,
    vocabulary: Vocabulary,
    *,
    image_size: int | tuple[int, int],
    question_length: int,
    answer_length: int,
    num_answers: int = 10,
    max_questions: int | None = None,
) -> VQAArrays:
    """Encodes questions and answers (each ``<eos>``-ended) and loads each distinct image once."""
    count = len(split) if max_questions is None else min(len(split), max_questions)
    split = VQASplit(*(getattr(split, field.name)[:count] for field in dataclasses.fields(split)))
    answers = np.full((count, num_answers, answer_length), PAD_ID, np.int32)
    for row, references in enumerate(split.answers):
        for a, words in enumerate(references[:num_answers]):
            answers[row, a] = vocabulary.encode(list(words), answer_length)
    images, image_index = coco.load_images_once(split.image_paths, image_size)
    return VQAArrays(
        images=images,
        image_index=image_index,
        questions=vocabulary.encode_batch(split.questions, question_length),
        answers=answers,
        split=split,
    )


def build_vocabulary(split: VQASplit, min_count: int = 1) -> Vocabulary:
    """A vocabulary of the words of a split's questions and answers."""
    texts = [*split.questions, *(words for references in split.answers for words in references)]
    return Vocabulary.build(texts, min_count)
