"""The BART + ViT unified model: its params, the image reaches the decoder, local HF directories
(Flax and PyTorch-format) round-trip, the tasks' backbone settings (what it shares with the other
backbone is tested in tests/test_backbones.py)."""

import copy
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tiny_backbones
from flax.traverse_util import flatten_dict
from tiny_backbones import BINS, IMAGE, PROMPTS, WORDS

from rs_jax import pipeline
from rs_jax.models import backbones, bart_unified

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]
BART = backbones.BART


@pytest.fixture(scope="module")
def model_and_params(fast_compile):
    _, model, params = tiny_backbones.model_and_params(BART.name)
    return model, params


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.PRNGKey(1), (6, IMAGE, IMAGE, 3))


@pytest.fixture(scope="module")
def saved(model_and_params, tmp_path_factory):
    """A tiny BART and ViT written as HF Flax directories by ``save_bart_unified``."""
    model, params = model_and_params
    root = tmp_path_factory.mktemp("bart_unified")
    bart_dir, vision_dir = str(root / "bart"), str(root / "vit")
    bart_unified.save_bart_unified(model, params, bart_dir, vision_dir)
    return bart_dir, vision_dir


def test_params_hold_every_part(model_and_params):
    _, params = model_and_params
    assert set(params) == {"bart", "vision", "projection"}
    assert params["projection"]["kernel"].shape == (16, 16)


def test_location_loss_reaches_every_part_and_the_image_matters(model_and_params, images):
    model, params = model_and_params
    targets = jnp.array([[20, 21, 25, 29]] * 6)

    def loss(params, images):
        return BART.location_cross_entropy(
            model, params, images, PROMPTS, targets, first_location_id=WORDS, num_bins=BINS, sigma=1.0
        )[0]

    @jax.jit
    def loss_grads_and_log_probs(params, images):
        log_probs = jax.nn.log_softmax(BART.output_logits(model, params, images, PROMPTS, targets))
        return jax.value_and_grad(loss)(params, images), log_probs

    (value, grads), log_probs = loss_grads_and_log_probs(params, images)
    assert np.isfinite(value)
    for part in ("bart", "vision", "projection"):
        assert max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(grads[part])) > 0, part
    _, other_log_probs = loss_grads_and_log_probs(params, images[::-1])
    # rows 0 and 3 share a prompt: only their images differ
    change = np.abs(np.exp(np.asarray(log_probs)) - np.exp(np.asarray(other_log_probs)))
    assert (change.max(axis=(1, 2)) > 1e-6).all()
    with pytest.raises(ValueError, match="images must be"):
        loss(params, images[:, :8])


def test_flax_directories_round_trip(model_and_params, images, saved):
    model, params = model_and_params
    loaded_model, loaded = bart_unified.load(*saved, vocab_size=WORDS + BINS)
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), params, loaded)
    assert all(jax.tree.leaves(same))
    assert bart_unified.special_ids(loaded_model) == bart_unified.special_ids(model)
    outputs = jnp.array([[3, 4, 2, 0]] * 6)
    logits = jax.jit(BART.output_logits, static_argnums=0)
    loaded_logits = logits(loaded_model, loaded, images, PROMPTS, outputs)
    np.testing.assert_array_equal(loaded_logits, logits(model, params, images, PROMPTS, outputs))


def _write_pytorch_safetensors(hf_model, params, directory):
    """``params`` as a PyTorch-format checkpoint (PyTorch names and layouts), written without torch."""
    from safetensors.numpy import save_file

    state = {}
    for path, value in flatten_dict(params).items():
        value, name = np.asarray(value), path[-1]
        if name in ("scale", "embedding"):
            name = "weight"
        elif name == "kernel":
            value, name = (value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T), "weight"
        state[".".join((*path[:-1], name))] = np.ascontiguousarray(value)
    os.makedirs(directory)
    config = copy.deepcopy(hf_model.config)
    config.architectures = [type(hf_model).__name__.removeprefix("Flax")]
    config.save_pretrained(directory)
    save_file(state, os.path.join(directory, "model.safetensors"))


def test_pytorch_safetensors_load_without_torch(model_and_params, tmp_path):
    model, params = model_and_params
    bart_dir, vision_dir = str(tmp_path / "bart"), str(tmp_path / "vit")
    _write_pytorch_safetensors(model.bart, params["bart"], bart_dir)
    _write_pytorch_safetensors(model.vision, params["vision"], vision_dir)
    with pytest.raises(ValueError, match="pass a key"):
        bart_unified.load(bart_dir, vision_dir)
    loaded_model, loaded = bart_unified.load(bart_dir, vision_dir, key=jax.random.PRNGKey(3))
    for part in ("bart", "vision"):
        expected, found = flatten_dict(params[part]), flatten_dict(loaded[part])
        assert expected.keys() == found.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(found[name], value, err_msg=str(name))
    assert loaded["projection"]["kernel"].shape == (16, 16)
    assert bart_unified.special_ids(loaded_model) == bart_unified.special_ids(model)


def test_bad_directories_are_clear_errors(saved, tmp_path):
    bart_dir, vision_dir = saved
    with pytest.raises(ValueError, match=r"vision_dir .* not a local Hugging Face model directory"):
        bart_unified.load(bart_dir, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="bart_dir '' is not"):
        bart_unified.load("", vision_dir)
    with pytest.raises(ValueError, match="vocabulary of 30 tokens; this data needs 31"):
        bart_unified.load(bart_dir, vision_dir, vocab_size=31)
    with pytest.raises(ValueError, match="vision encoder must be one of"):
        bart_unified.load(bart_dir, bart_dir)


def test_grounding_task_builds_and_trains_the_bart_backbone():
    """build() with backbone=bart, one pre-training step of its learner and its greedy predictor, on
    the evaluation rows (the scene sampler's compile would dominate a whole update; the smoke run of
    tests/test_grounding.py covers the pipeline)."""
    from configs import grounding as grounding_config
    from tasks import grounding

    config = dataclasses.replace(grounding_config.get_config("smoke"), backbone="bart")
    task = grounding.build(config)
    params, _ = task.pretraining.init(jax.random.PRNGKey(0))
    assert {"bart", "vision", "projection"} <= set(params)
    evaluate = task.finetuning(params, None).evaluate
    batch = evaluate.args[1]  # the evaluation set the Partial holds as operands
    optimizer = pipeline.clipped_adam(config.budget.pretrain_learning_rate, config.budget.max_grad_norm)

    @jax.jit
    def step_and_score(params, key):
        grads, metrics = jax.grad(task.pretraining.learner.loss, has_aux=True)(params, batch, key)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return optax.apply_updates(params, updates), metrics, evaluate(params, key)

    stepped, metrics, hits = step_and_score(params, jax.random.PRNGKey(1))
    assert all(np.isfinite(value).all() for value in jax.tree.leaves(metrics))
    for part in ("bart", "vision", "projection"):
        moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params[part], stepped[part])
        assert any(jax.tree.leaves(moved)), part
    assert hits.shape == (batch["boxes"].shape[0], 3) and ((hits == 0) | (hits == 1)).all()


def test_task_backbone_settings_are_checked():
    from configs import grounding as grounding_config
    from configs import vqa as vqa_config
    from tasks import grounding, vqa

    with pytest.raises(ValueError, match="backbone must be"):
        grounding.build(dataclasses.replace(grounding_config.get_config("smoke"), backbone="ofa"))
    with pytest.raises(ValueError, match="vision_model= is the ViT of backbone=bart"):
        vqa.build(dataclasses.replace(vqa_config.get_config("smoke"), vision_model="/somewhere"))
    with pytest.raises(ValueError, match="needs vision_model=<ViT directory>"):
        vqa.build(dataclasses.replace(vqa_config.get_config("smoke"), backbone="bart", model="/nowhere"))
