"""VQAv2 loaders on a tiny fixture in the official questions/annotations JSON formats."""

import json

import numpy as np
import pytest
from PIL import Image

from rs_jax.data import vqa

QUESTIONS = {
    "data_subtype": "val2014",
    "questions": [
        {"image_id": 7, "question": "What colour is the bus?", "question_id": 70},
        {"image_id": 7, "question": "How many dogs?", "question_id": 71},
    ],
}


def human_answers(texts):
    return [{"answer": text, "answer_confidence": "yes", "answer_id": i + 1} for i, text in enumerate(texts)]


ANNOTATIONS = {
    "annotations": [
        {
            "question_id": 70,
            "image_id": 7,
            "multiple_choice_answer": "red",
            "answer_type": "other",
            "answers": human_answers(
                ["dark red", "red", "red", "maroon", "red", "red", "red", "red", "red", "red"]
            ),
        },
        {  # no multiple_choice_answer: the most common answer ("2", given first among the ties) is used
            "question_id": 71,
            "image_id": 7,
            "answers": human_answers(["2", "3", "2", "3", "1", "two", "2", "3", "4", "5"]),
        },
    ]
}


@pytest.fixture
def dataset(tmp_path):
    (tmp_path / "questions.json").write_text(json.dumps(QUESTIONS))
    (tmp_path / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    Image.new("RGB", (30, 20), "green").save(tmp_path / "COCO_val2014_000000000007.jpg")
    return tmp_path


def test_questions_and_ten_answers_canonical_first(dataset):
    split = vqa.load_vqa(dataset / "questions.json", dataset / "annotations.json")
    assert split.questions[0] == ("what", "colour", "is", "the", "bus", "?")
    assert split.image_paths[0] == str(dataset / "COCO_val2014_000000000007.jpg")
    assert split.question_ids == (70, 71) and split.answer_types == ("other", "")
    assert len(split.answers[0]) == 10 and split.answers[0][0] == ("red",)
    assert split.answers[0].count(("red",)) == 8 and split.answers[0][1] == ("dark", "red")
    assert split.answers[1][0] == ("2",) and split.answers[1].count(("2",)) == 3
    assert vqa.most_common_answer(["a", "b", "b", "a"]) == "a"


def test_arrays_store_each_image_once(dataset):
    split = vqa.load_vqa(dataset / "questions.json", dataset / "annotations.json")
    vocabulary = vqa.build_vocabulary(split)
    arrays = vqa.vqa_arrays(
        split, vocabulary, image_size=4, question_length=8, answer_length=3, num_answers=4
    )
    assert arrays.images.shape == (1, 4, 4, 3) and arrays.image_index.tolist() == [0, 0]
    np.testing.assert_allclose(arrays.images[0, 0, 0], np.array([0, 128, 0]) / 255.0, atol=0.02)  # JPEG
    assert arrays.questions.shape == (2, 8) and arrays.answers.shape == (2, 4, 3)
    assert vocabulary.decode(arrays.answers[0, 0]) == "red"
    assert vocabulary.decode(arrays.answers[0, 1]) == "dark red"
    one = vqa.vqa_arrays(split, vocabulary, image_size=4, question_length=8, answer_length=3, max_questions=1)
    assert one.questions.shape == (1, 8) and len(one.split) == 1


def test_malformed_files_are_value_errors(dataset, tmp_path):
    questions, annotations = dataset / "questions.json", dataset / "annotations.json"
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        vqa.load_vqa(tmp_path / "broken.json", annotations)
    with pytest.raises(ValueError, match=r"absent\.json: cannot be read"):
        vqa.load_vqa(questions, tmp_path / "absent.json")
    (tmp_path / "no_list.json").write_text(json.dumps({"annotations": {}}))
    with pytest.raises(ValueError, match='"annotations" list'):
        vqa.load_vqa(questions, tmp_path / "no_list.json")
    (tmp_path / "fewer.json").write_text(json.dumps({"annotations": ANNOTATIONS["annotations"][:1]}))
    with pytest.raises(ValueError, match="question 71 has no annotation"):
        vqa.load_vqa(questions, tmp_path / "fewer.json")
    no_answers = {
        "annotations": [{**ANNOTATIONS["annotations"][0], "answers": []}, ANNOTATIONS["annotations"][1]]
    }
    (tmp_path / "no_answers.json").write_text(json.dumps(no_answers))
    with pytest.raises(ValueError, match="no 'answers' list"):
        vqa.load_vqa(questions, tmp_path / "no_answers.json")
    (tmp_path / "no_subtype.json").write_text(json.dumps({"questions": QUESTIONS["questions"]}))
    with pytest.raises(ValueError, match="subtype="):
        vqa.load_vqa(tmp_path / "no_subtype.json", annotations)
    assert len(vqa.load_vqa(tmp_path / "no_subtype.json", annotations, subtype="val2014")) == 2
