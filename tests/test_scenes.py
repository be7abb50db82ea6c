import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.data import scenes
from rs_jax.data.scenes import (
    ANSWER_NAMES,
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    NUMBERS,
    QUESTION_TYPES,
    REGION_NAMES,
    REGION_PHRASES,
    SHAPES,
    SIZES,
    SceneConfig,
    describe,
    needed_lengths,
    object_masks,
    render,
    sample_scenes,
    scene_vocabulary,
)
from rs_jax.data.vocab import EOS_ID, PAD_ID, UNK_ID, Vocabulary

CONFIG = SceneConfig()
BATCH = 256
TRACES: list[int] = []


def _counted_sample(key, batch_size, config):
    TRACES.append(1)
    return sample_scenes(key, batch_size, config)


SAMPLE = jax.jit(_counted_sample, static_argnums=(1, 2))


@pytest.fixture(scope="module")
def batch() -> scenes.Scenes:
    return jax.tree.map(np.asarray, SAMPLE(jax.random.key(0), BATCH, CONFIG))


@pytest.fixture(scope="module")
def described(batch) -> list[dict]:
    return [describe(batch, i) for i in range(BATCH)]


def words_of(ids) -> list[str]:
    return scene_vocabulary().decode_words(ids)


def contains(words: list[str], phrase: str) -> bool:
    phrase_words = phrase.split()
    return any(words[i : i + len(phrase_words)] == phrase_words for i in range(len(words)))


def test_shapes_and_dtypes(batch):
    B, M, K, Q, A = BATCH, CONFIG.max_objects, CONFIG.num_captions, CONFIG.num_questions, CONFIG.num_answers
    H = CONFIG.image_size
    chex.assert_shape(batch.images, (B, H, H, 3))
    chex.assert_shape(batch.boxes, (B, M, 4))
    chex.assert_shape(list(batch.objects), (B, M))
    chex.assert_shape(batch.captions, (B, K, CONFIG.caption_length))
    chex.assert_shape(batch.referring, (B, M, CONFIG.referring_length))
    chex.assert_shape(batch.questions, (B, Q, CONFIG.question_length))
    chex.assert_shape(batch.answers, (B, Q, A, CONFIG.answer_length))
    chex.assert_shape([batch.question_type, batch.answer_class], (B, Q))
    chex.assert_shape(batch.prompts, (B, CONFIG.caption_length))
    chex.assert_shape([batch.num_objects, batch.background], (B,))
    assert batch.images.dtype == np.float32 and batch.boxes.dtype == np.float32
    assert batch.objects.present.dtype == bool and batch.referring_valid.dtype == bool
    for ids in (batch.captions, batch.referring, batch.questions, batch.answers, batch.answer_class):
        assert ids.dtype == np.int32
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    np.testing.assert_array_equal(batch.prompts, batch.captions[:, 0])
    assert np.all(batch.objects.present.sum(1) == batch.num_objects)
    assert set(np.unique(batch.num_objects)) == set(range(1, CONFIG.max_objects + 1))


def test_same_key_same_scenes_other_key_other_scenes_no_recompile(batch):
    traces_before = len(TRACES)
    again = SAMPLE(jax.random.key(0), BATCH, CONFIG)
    other = SAMPLE(jax.random.key(1), BATCH, CONFIG)
    assert len(TRACES) == traces_before, "a second call with a new key recompiled"
    for leaf, leaf_again in zip(jax.tree.leaves(batch), jax.tree.leaves(again)):
        np.testing.assert_array_equal(leaf, leaf_again)
    assert not np.array_equal(batch.images, other.images)
    assert not np.array_equal(batch.captions, other.captions)


def test_vmap_over_raw_keys_gives_each_keys_scenes_whatever_the_batch_size(batch):
    raw_keys = jnp.stack([jax.random.key_data(jax.random.key(seed)) for seed in (1, 0)])
    assert raw_keys.dtype == jnp.uint32
    stacked = jax.jit(jax.vmap(lambda key: sample_scenes(key, 2, CONFIG)))(raw_keys)
    chex.assert_shape(stacked.images, (2, 2, CONFIG.image_size, CONFIG.image_size, 3))
    # Scenes 0 and 1 of key 0 are the same in a batch of 2 as in the batch of 256.
    for leaf, full in zip(jax.tree.leaves(stacked), jax.tree.leaves(batch)):
        np.testing.assert_array_equal(np.asarray(leaf[1]), full[:2])
    assert not np.array_equal(np.asarray(stacked.images[0]), batch.images[:2])


def test_object_count_and_question_type_subset():
    config = SceneConfig(
        image_size=8, min_objects=2, max_objects=2, num_captions=1, num_questions=2, question_types=("count",)
    )
    small = jax.jit(sample_scenes, static_argnums=(1, 2))(jax.random.key(3), 4, config)
    chex.assert_shape(small.images, (4, 8, 8, 3))
    assert np.all(np.asarray(small.num_objects) == 2)
    assert np.all(np.asarray(small.question_type) == QUESTION_TYPES.index("count"))
    assert np.all(np.asarray(small.answer_class) == ANSWER_NAMES.index("two"))


def test_box_areas_cover_the_three_grounding_buckets(batch):
    present = batch.objects.present
    boxes = batch.boxes[present]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    bucket = np.where(area < 30_000, 0, np.where(area < 100_000, 1, 2))
    counts = np.bincount(bucket, minlength=3)
    assert np.all(counts >= 0.2 * present.sum()), counts
    np.testing.assert_array_equal(bucket, batch.objects.size[present])
    assert np.all(boxes >= 0) and np.all(boxes <= 1000)
    np.testing.assert_array_equal(batch.boxes[~present], 0)


def test_boxes_match_the_rendered_pixels(batch):
    H = CONFIG.image_size
    pixel = 1000.0 / H
    masks = jax.jit(jax.vmap(lambda boxes, shapes: object_masks(boxes, shapes, H, CONFIG.supersample)))
    coverage = np.asarray(masks(batch.boxes, batch.objects.shape))
    rows, cols = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")
    checked_colour = 0
    for i in range(BATCH):
        for m in np.flatnonzero(batch.objects.present[i]):
            x0, y0, x1, y1 = batch.boxes[i, m]
            covered = coverage[i, m] > 0
            assert covered.any()
            # Every covered pixel overlaps the box, and the covered pixels span it (±1 pixel).
            assert np.all((cols[covered] + 1) * pixel > x0) and np.all(cols[covered] * pixel < x1)
            assert np.all((rows[covered] + 1) * pixel > y0) and np.all(rows[covered] * pixel < y1)
            assert (
                abs(cols[covered].min() * pixel - x0) <= pixel
                and abs((cols[covered].max() + 1) * pixel - x1) <= pixel
            )
            assert (
                abs(rows[covered].min() * pixel - y0) <= pixel
                and abs((rows[covered].max() + 1) * pixel - y1) <= pixel
            )
            # Where this object is fully drawn and nothing later covers it, the image has its colour.
            later = coverage[i, m + 1 :][batch.objects.present[i, m + 1 :]]
            visible = (coverage[i, m] == 1) & (later.sum(0) == 0 if len(later) else True)
            if visible.any():
                colour = COLOUR_RGB[batch.objects.colour[i, m]]
                assert np.abs(batch.images[i][visible] - colour).max() < 0.1
                checked_colour += 1
    assert checked_colour > 0.9 * batch.objects.present.sum()


def test_render_draws_later_objects_on_top():
    boxes = jnp.array([[0.0, 0.0, 1000.0, 1000.0], [0.0, 0.0, 500.0, 1000.0]])
    shapes = jnp.array([SHAPES.index("square"), SHAPES.index("square")])
    colours = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    draw = jax.jit(render)
    image = np.asarray(draw(boxes, shapes, colours, jnp.array([True, True]), jnp.zeros((8, 8, 3))))
    np.testing.assert_allclose(image[:, :4], np.broadcast_to([0.0, 0.0, 1.0], (8, 4, 3)))
    np.testing.assert_allclose(image[:, 4:], np.broadcast_to([1.0, 0.0, 0.0], (8, 4, 3)))
    absent = np.asarray(draw(boxes, shapes, colours, jnp.array([False, False]), jnp.zeros((8, 8, 3))))
    np.testing.assert_array_equal(absent, 0.0)


def test_texts_are_well_formed_and_fit(batch):
    lengths = needed_lengths(CONFIG)
    for field, needed in lengths.items():
        assert getattr(CONFIG, field) >= needed, (field, needed)
    for ids in (batch.captions, batch.questions, batch.answers, batch.referring[batch.referring_valid]):
        flat = ids.reshape(-1, ids.shape[-1])
        ends = np.argmax(flat == EOS_ID, axis=1)
        assert np.all((flat == EOS_ID).sum(1) == 1), "every text has exactly one <eos>"
        assert np.all(ends > 0), "no empty text"
        after = np.arange(flat.shape[1])[None, :] > ends[:, None]
        assert np.all(flat[after] == PAD_ID)
        assert np.all(flat[~after & (np.arange(flat.shape[1])[None, :] < ends[:, None])] > UNK_ID)
    np.testing.assert_array_equal(batch.referring[~batch.referring_valid], PAD_ID)


def test_captions_describe_the_scene_with_different_lengths(batch, described):
    for i, scene in enumerate(described):
        caption_words = [words_of(caption) for caption in batch.captions[i]]
        lengths = {len(words) for words in caption_words}
        assert len(lengths) >= 2
        # Short list (style 1) is shorter than the long description (style 2).
        assert len(caption_words[1]) < len(caption_words[2])
        for words in caption_words:
            for obj in scene["objects"]:
                assert obj["colour"] in words and obj["shape"] in words, (words, obj)
        canonical = caption_words[0]
        assert contains(canonical, f"on a {scene['background']} background")
        for obj in scene["objects"]:
            region = REGION_PHRASES[REGION_NAMES.index(obj["region"])]
            assert contains(canonical, f"a {obj['size']} {obj['colour']} {obj['shape']} {region}"), canonical


def test_regions_follow_box_centres(batch):
    centre_x = (batch.boxes[..., 0] + batch.boxes[..., 2]) / 2
    centre_y = (batch.boxes[..., 1] + batch.boxes[..., 3]) / 2
    expected = 3 * np.minimum(centre_y // (1000 / 3), 2) + np.minimum(centre_x // (1000 / 3), 2)
    present = batch.objects.present
    np.testing.assert_array_equal(batch.objects.region[present], expected[present])
    assert len(np.unique(batch.objects.region[present])) == 9


def test_referring_expressions_name_their_target(batch):
    for i in range(BATCH):
        for m in np.flatnonzero(batch.referring_valid[i]):
            words = words_of(batch.referring[i, m])
            colour, shape = COLOURS[batch.objects.colour[i, m]], SHAPES[batch.objects.shape[i, m]]
            size, region = SIZES[batch.objects.size[i, m]], REGION_PHRASES[batch.objects.region[i, m]]
            assert " ".join(words) in {
                f"the {colour} {shape}",
                f"the {size} {colour} {shape}",
                f"the {colour} {shape} {region}",
                f"the {size} {colour} {shape} {region}",
            }, words
    np.testing.assert_array_equal(batch.referring_valid, batch.objects.present)


def _object_with(batch, i, attribute: str, value: int) -> int:
    matches = np.flatnonzero(batch.objects.present[i] & (getattr(batch.objects, attribute)[i] == value))
    assert len(matches) == 1, (attribute, value)
    return int(matches[0])


def test_answers_match_the_scene(batch):
    seen_answers = set()
    for i in range(BATCH):
        present_shapes = set(batch.objects.shape[i][batch.objects.present[i]].tolist())
        for q in range(CONFIG.num_questions):
            question = words_of(batch.questions[i, q])
            answers = [words_of(answer) for answer in batch.answers[i, q]]
            kind = QUESTION_TYPES[batch.question_type[i, q]]
            answer = ANSWER_NAMES[batch.answer_class[i, q]]
            seen_answers.add(answer)
            assert question[-1] == "?"
            assert " ".join(answers[0]) == answer
            asked_shape = next((SHAPES.index(w) for w in question if w in SHAPES), None)
            asked_colour = next((COLOURS.index(w) for w in question if w in COLOURS), None)
            if kind == "count":
                assert answer == NUMBERS[batch.num_objects[i] - 1]
            elif kind == "exists":
                assert answer == ("yes" if asked_shape in present_shapes else "no")
            elif kind == "colour":
                assert (
                    answer == COLOURS[batch.objects.colour[i, _object_with(batch, i, "shape", asked_shape)]]
                )
            elif kind == "shape":
                assert (
                    answer == SHAPES[batch.objects.shape[i, _object_with(batch, i, "colour", asked_colour)]]
                )
            else:
                target = _object_with(batch, i, "shape", asked_shape)
                assert asked_colour is None or batch.objects.colour[i, target] == asked_colour
                assert answer == REGION_NAMES[batch.objects.region[i, target]]
            # Every reference answer carries the answer's words.
            assert all(contains(words, answer) for words in answers), answers
    assert {"yes", "no"} <= seen_answers
    assert set(QUESTION_TYPES) == {QUESTION_TYPES[t] for t in np.unique(batch.question_type)}
    # Questions of one scene have distinct types while Q ≤ the number of types.
    assert all(len(set(row.tolist())) == CONFIG.num_questions for row in batch.question_type)


def test_describe_decodes_one_scene(described):
    scene = described[0]
    assert scene["background"] in BACKGROUNDS
    assert scene["prompt"] == scene["captions"][0]
    assert len(scene["captions"]) == CONFIG.num_captions
    assert len(scene["referring"]) == len(scene["objects"])
    assert all(isinstance(q["question"], str) and q["question"].endswith("?") for q in scene["questions"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_objects": 6}, "max_objects"),
        ({"min_objects": 0}, "min_objects"),
        ({"question_types": ("colour", "smell")}, "question_types"),
        ({"caption_length": 1}, "caption_length"),
        ({"num_captions": 0}, "num_captions"),
    ],
)
def test_config_errors_are_value_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        SceneConfig(**overrides)


# Vocabulary.


def test_vocabulary_round_trip_and_specials(tmp_path):
    vocab = scene_vocabulary()
    assert vocab.words[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    text = "there is a large red circle at the top left, next to a small blue square"
    ids = vocab.encode(text, 24)
    assert ids.dtype == np.int32 and ids.shape == (24,)
    assert vocab.decode(ids) == text
    np.testing.assert_array_equal(vocab.encode(vocab.decode(ids), 24), ids)
    assert vocab.decode(vocab.encode("a red zebra", 6)) == "a red <unk>"
    cut = vocab.encode("a red circle and a blue square", 4)
    assert cut.tolist()[-1] == EOS_ID and vocab.decode(cut) == "a red circle"
    assert vocab.decode([vocab.bos_id, *vocab.encode("red", 3).tolist()]) == "red"
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    assert scene_vocabulary() is vocab


def test_vocabulary_build_is_deterministic():
    corpus = [["a", "dog", "runs"], ["a", "cat", "runs"], ["the", "dog"]]
    vocab = Vocabulary.build(corpus, min_count=2)
    assert vocab.words[4:] == ("a", "dog", "runs")
    assert Vocabulary.build(list(reversed(corpus)), min_count=2) == vocab
    assert Vocabulary.build(corpus, min_count=1, max_size=6).words[4:] == ("a", "dog")
    assert vocab.encode_batch(["a dog", "a cat runs"], 5).tolist() == [[4, 5, 2, 0, 0], [4, 3, 6, 2, 0]]
    with pytest.raises(ValueError, match="start with"):
        Vocabulary(("a", "b"))
    with pytest.raises(ValueError, match="Duplicate"):
        Vocabulary(("<pad>", "<bos>", "<eos>", "<unk>", "a", "a"))


def test_object_naming_counts_right_wrong_and_missing_colour_shape_pairs(batch):
    naming = scenes.object_naming(jnp.asarray(batch.captions[:, 0]), batch.objects)
    assert naming.pair_named.sum() == naming.present.sum()  # the canonical caption names each object once
    np.testing.assert_array_equal(naming.pair_right, naming.pair_named)
    np.testing.assert_array_equal(naming.object_named, naming.present)

    vocabulary = scene_vocabulary()
    first = describe(batch, 0)["objects"][0]
    wrong_colour = next(c for c in COLOURS if c != first["colour"])
    caption = vocabulary.encode(
        f"a {first['colour']} {first['shape']} and a {wrong_colour} {first['shape']}", 12
    )
    naming = scenes.object_naming(
        jnp.asarray(caption[None]), jax.tree.map(lambda leaf: leaf[:1], batch.objects)
    )
    assert naming.pair_named.sum() == 2 and naming.pair_right.sum() == 1
    assert naming.object_named.sum() == 1 and naming.present.sum() == batch.num_objects[0]
