import json

import numpy as np
import pytest
from PIL import Image

from rs_jax.data.coco import (
    build_vocabulary,
    encode_captions,
    load_images,
    load_karpathy,
    load_karpathy_arrays,
)
from rs_jax.data.vocab import EOS_ID, PAD_ID, UNK_ID


def sentence(text: str) -> dict:
    return {"tokens": text.split(), "raw": text.capitalize() + "."}


def write_fixture(root) -> str:
    """A five-image Karpathy file (one restval, one image with 2 references) and its images."""
    entries = [
        ("train2014", "a.jpg", "train", 1, ["a dog runs", "a brown dog runs fast", "the dog runs"]),
        ("val2014", "b.jpg", "restval", 2, ["a cat sits", "a cat sits on a mat", "the cat"]),
        ("val2014", "c.jpg", "val", 3, ["a red bus", "a bus on the road"]),
        ("val2014", "d.jpg", "test", 4, ["two dogs play", "dogs play in the park", "two brown dogs"]),
        ("train2014", "e.jpg", "train", 5, ["a dog sits", "a dog on a mat", "the brown dog"]),
    ]
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 0, 0)]
    images = []
    for (folder, name, split, cocoid, texts), colour in zip(entries, colours):
        (root / folder).mkdir(exist_ok=True)
        Image.new("RGB", (12, 8), colour).save(root / folder / name)
        images.append(
            {
                "filepath": folder,
                "filename": name,
                "split": split,
                "cocoid": cocoid,
                "sentences": [sentence(text) for text in texts],
            }
        )
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return str(path)


def test_karpathy_splits_merge_restval_into_train(tmp_path):
    splits = load_karpathy(write_fixture(tmp_path))
    assert {name: len(split) for name, split in splits.items()} == {"train": 3, "val": 1, "test": 1}
    train = splits["train"]
    assert train.image_ids == (1, 2, 5)
    assert train.image_paths[1] == str(tmp_path / "val2014" / "b.jpg")
    assert train.captions[1][1] == ("a", "cat", "sits", "on", "a", "mat")
    assert splits["val"].captions == ((("a", "red", "bus"), ("a", "bus", "on", "the", "road")),)


def test_vocabulary_from_train_and_padded_references(tmp_path):
    splits = load_karpathy(write_fixture(tmp_path))
    vocab = build_vocabulary(splits["train"], min_count=2)
    # Train words seen at least twice, most frequent first, ties alphabetical.
    assert vocab.words[4:] == ("a", "dog", "cat", "runs", "sits", "the", "brown", "mat", "on")
    ids, valid = encode_captions(splits["val"].captions, vocab, max_length=6, num_refs=3)
    assert ids.shape == (1, 3, 6) and ids.dtype == np.int32
    np.testing.assert_array_equal(valid, [[True, True, False]])
    np.testing.assert_array_equal(ids[0, 2], PAD_ID)
    assert ids[0, 0].tolist() == [vocab.id("a"), UNK_ID, UNK_ID, EOS_ID, PAD_ID, PAD_ID]
    assert vocab.decode(ids[0, 1]) == "a <unk> on the <unk>"
    # Default K: the most references any image has; long captions are cut but keep <eos>.
    ids, valid = encode_captions(splits["train"].captions, vocab, max_length=4)
    assert ids.shape == (3, 3, 4) and valid.all()
    assert np.all((ids == EOS_ID).sum(-1) == 1)


def test_load_images_resizes_to_float_rgb(tmp_path):
    splits = load_karpathy(write_fixture(tmp_path))
    images = load_images(splits["train"].image_paths, image_size=(6, 4))
    assert images.shape == (3, 6, 4, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], np.broadcast_to([1.0, 0.0, 0.0], (6, 4, 3)), atol=0.02)  # JPEG
    np.testing.assert_allclose(images[1], np.broadcast_to([0.0, 1.0, 0.0], (6, 4, 3)), atol=0.02)  # JPEG
    assert load_images(splits["val"].image_paths, image_size=5).shape == (1, 5, 5, 3)
    with pytest.raises(ValueError, match=r"missing\.jpg"):
        load_images([str(tmp_path / "missing.jpg")], image_size=4)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"pictures": []}', '"images" list'),
        ('{"images": [{"filename": "a.jpg", "split": "train"}]}', r"images\[0\] lacks 'sentences'"),
        ('{"images": [{"filename": "a.jpg", "split": "dev", "sentences": []}]}', "split 'dev'"),
        (
            '{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"text": "x"}]}]}',
            r"sentences\[0\] has neither",
        ),
        ('{"images": [{"filename": "a.jpg", "split": "train", "sentences": []}]}', "no images in split"),
    ],
)
def test_malformed_files_raise_value_errors_naming_file_and_problem(tmp_path, content, message):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_karpathy(path)
    assert "broken.json" in str(error.value)


def test_a_missing_file_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"absent\.json: cannot be read"):
        load_karpathy(tmp_path / "absent.json")


def test_raw_sentences_and_optional_splits(tmp_path):
    path = tmp_path / "flickr.json"
    entry = {"filename": "x.jpg", "split": "train", "imgid": 7, "sentences": [{"raw": "A Dog, running!"}]}
    path.write_text(json.dumps({"images": [entry]}))
    splits = load_karpathy(path, image_root="/data/flickr", required_splits=("train",))
    assert splits["train"].captions == ((("a", "dog", ",", "running", "!"),),)
    assert splits["train"].image_paths == ("/data/flickr/x.jpg",)
    assert splits["train"].image_ids == (7,)
    assert len(splits["test"]) == 0


def test_load_karpathy_arrays_in_one_call(tmp_path):
    data = load_karpathy_arrays(
        write_fixture(tmp_path), image_size=4, max_length=5, min_count=2, num_refs=3, max_images=2
    )
    assert data.vocabulary.words[4:7] == ("a", "cat", "dog")  # counted on the 2 kept train images
    assert data.train_images.shape == (2, 4, 4, 3) and data.train_captions.shape == (2, 3, 5)
    assert data.val_images.shape == (1, 4, 4, 3) and data.test_captions.shape == (1, 3, 5)
    np.testing.assert_array_equal(data.val_valid, [[True, True, False]])
    assert data.splits["train"].image_ids == (1, 2)
    assert data.vocabulary.decode(data.train_captions[0, 0]) == "a dog runs"
