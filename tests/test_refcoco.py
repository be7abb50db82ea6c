"""RefCOCO loaders on a tiny fixture written in the refer API's formats (refs pickle + instances JSON)."""

import collections
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from rs_jax.data import refcoco

IMAGES = [
    {"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "width": 200, "height": 100},
    {"id": 12, "file_name": "COCO_train2014_000000000012.jpg", "width": 50, "height": 50},
]
ANNOTATIONS = [
    {"id": 101, "image_id": 11, "bbox": [20.0, 10.0, 100.0, 50.0], "category_id": 1, "area": 5000.0},
    {"id": 102, "image_id": 12, "bbox": [0.0, 0.0, 50.0, 60.0], "category_id": 2, "area": 2500.0},
]
REFS = [
    {
        "ref_id": 0,
        "ann_id": 101,
        "image_id": 11,
        "split": "train",
        "sentences": [
            {"tokens": ["man", "on", "left"], "raw": "Man on left", "sent_id": 0},
            {"sent": "tall man"},
        ],
    },
    {"ref_id": 1, "ann_id": 102, "image_id": 12, "split": "val", "sentences": [{"raw": "The DOG!"}]},
]


@pytest.fixture
def dataset(tmp_path):
    for image, colour in zip(IMAGES, ("red", "blue")):
        Image.new("RGB", (image["width"], image["height"]), colour).save(tmp_path / image["file_name"])
    (tmp_path / "instances.json").write_text(json.dumps({"images": IMAGES, "annotations": ANNOTATIONS}))
    with open(tmp_path / "refs(unc).p", "wb") as handle:
        pickle.dump(REFS, handle, protocol=2)
    return tmp_path


def test_refs_pickle_and_instances_give_grid_boxes(dataset):
    splits = refcoco.load_refcoco(dataset / "refs(unc).p", dataset / "instances.json")
    train, val = splits["train"], splits["val"]
    assert train.expressions == (("man", "on", "left"), ("tall", "man"))
    assert train.ref_ids == (0, 0) and train.image_ids == (11, 11)
    assert train.image_paths[0] == str(dataset / IMAGES[0]["file_name"])
    # x / width and y / height on the 1000 grid: [20, 10, 120, 60] in a 200×100 image.
    np.testing.assert_allclose(train.boxes, [[100.0, 100.0, 600.0, 600.0]] * 2)
    assert val.expressions == (("the", "dog", "!"),)
    np.testing.assert_allclose(val.boxes, [[0.0, 0.0, 1000.0, 1000.0]])  # clipped to the image
    only_val = refcoco.load_refcoco(dataset / "refs(unc).p", dataset / "instances.json", splits=["val"])
    assert set(only_val) == {"val"}


def test_refs_as_json_and_arrays(dataset):
    (dataset / "refs.json").write_text(json.dumps(REFS))
    vocabulary, train, held_out = refcoco.load_refcoco_arrays(
        dataset / "refs.json", dataset / "instances.json", image_size=8, max_length=5
    )
    assert train.images.shape == (1, 8, 8, 3) and train.image_index.tolist() == [0, 0]
    np.testing.assert_allclose(train.images[0, 0, 0], [1.0, 0.0, 0.0], atol=0.02)  # JPEG
    assert train.expressions.shape == (2, 5)
    assert vocabulary.decode(train.expressions[0]) == "man on left"
    assert held_out.boxes.shape == (1, 4) and held_out.images.shape == (1, 8, 8, 3)


def test_malformed_files_are_value_errors(dataset):
    instances = dataset / "instances.json"
    (dataset / "garbage.p").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a refs pickle"):
        refcoco.load_refcoco(dataset / "garbage.p", instances)
    with open(dataset / "classy.p", "wb") as handle:  # a class reference is refused, not executed
        pickle.dump([collections.OrderedDict(REFS[0])], handle)
    with pytest.raises(ValueError, match=r"refuses to load collections\.OrderedDict"):
        refcoco.load_refcoco(dataset / "classy.p", instances)
    with open(dataset / "missing.p", "wb") as handle:
        pickle.dump([{**REFS[0], "ann_id": 999}], handle)
    with pytest.raises(ValueError, match="annotation 999 is not in"):
        refcoco.load_refcoco(dataset / "missing.p", instances)
    with open(dataset / "keys.p", "wb") as handle:
        pickle.dump([{"ref_id": 0}], handle)
    with pytest.raises(ValueError, match=r"refs\[0\] lacks 'ann_id'"):
        refcoco.load_refcoco(dataset / "keys.p", instances)
    (dataset / "bad_instances.json").write_text(json.dumps({"images": IMAGES, "annotations": [{"id": 1}]}))
    with pytest.raises(ValueError, match=r"annotations\[0\] needs"):
        refcoco.load_refcoco(dataset / "refs(unc).p", dataset / "bad_instances.json")
    with pytest.raises(ValueError, match="no expressions in split"):
        refcoco.load_refcoco(dataset / "refs(unc).p", instances, splits=["testA"])
    for refs, instances_file in (
        ("absent.p", instances),
        ("absent.json", instances),
        ("refs(unc).p", "no.json"),
    ):
        with pytest.raises(ValueError, match="cannot be read"):
            refcoco.load_refcoco(dataset / refs, dataset / instances_file)
