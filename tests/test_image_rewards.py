"""Image rewards against hand-computed values, the learned-scorer file format, and the Fréchet
distance of the realism score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax.rewards import images, quality


def _solid(rgb, size=4):
    return jnp.broadcast_to(jnp.asarray(rgb, jnp.float32), (1, size, size, 3))


def test_colourfulness_matches_hasler_susstrunk():
    assert float(images.colourfulness(_solid([0.5, 0.5, 0.5]))[0]) == pytest.approx(0.0, abs=1e-6)
    # pure red: rg = 1, yb = 0.5, no spread -> 0.3 · √1.25
    assert float(images.colourfulness(_solid([1.0, 0.0, 0.0]))[0]) == pytest.approx(
        0.3 * np.sqrt(1.25), rel=1e-5
    )
    half = jnp.concatenate([_solid([1.0, 0.0, 0.0])[:, :2], _solid([0.0, 1.0, 0.0])[:, 2:]], axis=1)
    # rg = ±1 (σ 1, μ 0); yb = 0.5 everywhere (σ 0, μ 0.5) -> 1 + 0.3 · 0.5
    assert float(images.colourfulness(half)[0]) == pytest.approx(1.15, rel=1e-5)


def test_brightness_contrast_and_skin():
    black, white = _solid([0.0, 0.0, 0.0]), _solid([1.0, 1.0, 1.0])
    assert float(images.brightness(white)[0]) == pytest.approx(1.0, rel=1e-6)
    assert float(images.brightness(_solid([0.0, 1.0, 0.0]))[0]) == pytest.approx(0.587, rel=1e-5)
    half = jnp.concatenate([black[:, :2], white[:, 2:]], axis=1)
    assert float(images.contrast(half)[0]) == pytest.approx(0.5, rel=1e-5)
    assert float(images.contrast(white)[0]) == pytest.approx(0.0, abs=1e-6)
    brown, grey, blue = _solid([0.45, 0.32, 0.20]), _solid([0.5, 0.5, 0.5]), _solid([0.15, 0.3, 0.95])
    assert images.skin(jnp.concatenate([brown, grey, blue])).tolist() == [1.0, 0.0, 0.0]
    assert float(images.skin(jnp.concatenate([brown[:, :1], grey[:, 1:]], axis=1))[0]) == pytest.approx(0.25)


def test_reward_components_stack_columns_and_reject_unknown_names():
    batch = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3))
    stacked = images.reward_components(["brightness", "skin"])(batch)
    np.testing.assert_allclose(stacked[:, 0], images.brightness(batch), rtol=1e-6)
    assert stacked.shape == (3, 2)
    with pytest.raises(ValueError, match="sharpness"):
        images.reward_components(["brightness", "sharpness"])
    with pytest.raises(ValueError, match="scorer head"):
        images.reward_components(["learned", "skin"])
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        images.brightness(jnp.zeros((8, 8, 3)))


def test_mlp_head_round_trips_through_a_file_and_scores_like_numpy(tmp_path):
    head = images.init_mlp_head(jax.random.key(1), 6, (5,))
    head["layers"][0]["bias"] = np.linspace(-1, 1, 5).astype(np.float32)
    path = tmp_path / "head.msgpack"
    images.save_mlp_head(path, head)
    loaded = images.load_mlp_head(path)
    features = np.asarray(jax.random.normal(jax.random.key(2), (4, 6)))
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    hidden = np.maximum(unit @ head["layers"][0]["kernel"] + head["layers"][0]["bias"], 0.0)
    expected = (hidden @ head["layers"][1]["kernel"] + head["layers"][1]["bias"])[:, 0]
    np.testing.assert_allclose(
        images.mlp_head_apply(loaded, jnp.asarray(features)), expected, rtol=1e-5, atol=1e-6
    )

    feature_params = quality.random_feature_params(jax.random.key(3), 6)
    scorer = images.LearnedScorer(lambda x: quality.random_features(feature_params, x), loaded)
    batch = jax.random.uniform(jax.random.key(4), (3, 8, 8, 3))
    scores = images.reward_components(["learned", "brightness"], scorer)(batch)
    assert scores.shape == (3, 2) and np.all(np.isfinite(scores))

    (tmp_path / "junk").write_bytes(b"not a head")
    with pytest.raises(ValueError, match=r"not a msgpack MLP head|not an MLP head"):
        images.load_mlp_head(tmp_path / "junk")
    with pytest.raises(ValueError, match="No scorer head"):
        images.load_mlp_head(tmp_path / "missing.msgpack")


def test_frechet_distance_matches_closed_forms():
    mean, cov = np.zeros(3), np.diag([1.0, 2.0, 3.0])
    assert quality.frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-8)
    # 1-D: (μ₁ − μ₂)² + σ₁² + σ₂² − 2σ₁σ₂ = 1 + 1 + 4 − 4
    assert quality.frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="disagree"):
        quality.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_moments_give_the_sample_gaussian_and_features_are_deterministic():
    params = quality.random_feature_params(jax.random.key(5), 8)
    batch = jax.random.uniform(jax.random.key(6), (10, 16, 16, 3))
    features = quality.random_features(params, batch)
    assert features.shape == (10, 8)
    np.testing.assert_array_equal(features, quality.random_features(params, batch))
    mean, cov = quality.gaussian_from_moments(np.asarray(quality.feature_moments(features)).mean(axis=0), 10)
    expected_mean, expected_cov = quality.gaussian_from_features(features)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="F \\+ F²"):
        quality.gaussian_from_moments(np.zeros(7), 10)
