"""The scene-world object classifier: targets, the objects-found measure, training, the shipped weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import starting_points
from rs_jax.data import scenes
from rs_jax.rewards import object_classifier

WORLD = scenes.reading_config("captions", image_size=16, max_objects=3, num_captions=1)


def drawn(count: int = 8, seed: int = 0) -> scenes.Scenes:
    return jax.jit(scenes.sample_scenes, static_argnums=(1, 2))(jax.random.key(seed), count, WORLD)


def with_readout_bias(bias: float):
    params = object_classifier.init_params(jax.random.key(0), width=4)
    params["readout"]["bias"] = jnp.full(object_classifier.NUM_PAIRS, bias)
    params["readout"]["kernel"] = jnp.zeros_like(params["readout"]["kernel"])
    return params


def test_targets_mark_exactly_the_colour_shape_pairs_of_the_present_objects():
    objects = drawn().objects
    targets = np.asarray(object_classifier.pair_targets(objects))
    for row, colours, shapes, present in zip(targets, objects.colour, objects.shape, objects.present):
        want = {int(c) * len(scenes.SHAPES) + int(s) for c, s, p in zip(colours, shapes, present) if p}
        assert set(np.flatnonzero(row)) == want


def test_a_classifier_that_detects_everything_finds_every_object_and_one_that_detects_nothing_none():
    scene = drawn()
    found = object_classifier.objects_found
    everything = np.asarray(found(with_readout_bias(10.0), scene.images, scene.objects))
    np.testing.assert_allclose(everything[:, 0], 1.0)
    counts = np.asarray(scene.objects.present).sum(axis=1)
    np.testing.assert_allclose(everything[:, 1], counts / object_classifier.NUM_PAIRS, rtol=1e-6)
    nothing = np.asarray(found(with_readout_bias(-10.0), scene.images, scene.objects))
    np.testing.assert_allclose(nothing, np.stack([np.zeros(8), np.ones(8)], axis=1))


def test_images_of_another_size_are_resized_to_the_classifier_s():
    params = object_classifier.init_params(jax.random.key(1), width=4)
    small = jax.random.uniform(jax.random.key(2), (2, 16, 16, 3))
    size = object_classifier.IMAGE_SIZE
    large = jax.image.resize(small, (2, size, size, 3), "linear")
    np.testing.assert_allclose(
        object_classifier.logits(params, small), object_classifier.logits(params, large), atol=1e-5
    )


def test_training_lowers_the_cross_entropy_on_held_out_scenes():
    held_out = drawn(64, seed=9)

    def cross_entropy(params):
        logits = object_classifier.logits(params, held_out.images)
        targets = object_classifier.pair_targets(held_out.objects)
        return float(jnp.mean(jnp.logaddexp(0.0, logits) - targets * logits))

    key = jax.random.key(3)
    before = object_classifier.init_params(jax.random.split(key)[0], width=4)
    after = object_classifier.train(key, steps=30, world=WORLD, batch_size=16, width=4)
    assert cross_entropy(after) < cross_entropy(before) - 0.1


def test_the_shipped_classifier_verifies_and_finds_most_objects_of_held_out_scenes():
    manifest = starting_points.verify(str(starting_points.SHIPPED_ROOT / object_classifier.NAME))
    assert manifest["task"] == object_classifier.NAME
    params = object_classifier.load()
    shapes = jax.eval_shape(object_classifier.init_params, jax.random.key(0))
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    quality = manifest["quality"]
    assert quality["objects_found"]["mean"] > 0.8 and quality["detections_right"]["mean"] > 0.8


def test_the_build_command_writes_weights_that_load_and_their_held_out_quality(tmp_path):
    out = str(tmp_path / "classifier")
    manifest = object_classifier.main(["--out", out, "--steps", "2"])
    assert manifest["rebuild"] == f"python -m rs_jax.rewards.object_classifier --out {out} --steps 2 --seed 0"
    assert set(manifest["quality"]) == {
        "objects_found",
        "objects_found_small",
        "objects_found_medium",
        "objects_found_large",
        "detections_right",
    }
    assert all(0.0 <= value["mean"] <= 1.0 for value in manifest["quality"].values())
    assert jax.tree.structure(object_classifier.load(out)) == jax.tree.structure(object_classifier.load())


def test_another_task_s_weights_are_refused():
    with pytest.raises(ValueError, match="not 'object_classifier'"):
        object_classifier.load(str(starting_points.SHIPPED_ROOT / "vqa"))
