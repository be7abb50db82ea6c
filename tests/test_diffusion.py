"""The diffusers-based text-to-image model: trainable mask, frozen weights, sample space, the
denoising targets against the DDIM sampler, per-prompt deterministic sampling, the RWR loss on it
and loading a local Stable Diffusion directory (written by the test itself). The smoke fine-tune
through the trainer is tests/test_diffusion_task.py."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from rs_jax.data import scenes
from rs_jax.models import diffusion
from rs_jax.train import rwr

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]
VOCAB, LENGTH, IMAGE = 20, 6, 16


@pytest.fixture(scope="module")
def model_and_params(third_party_module):
    model = diffusion.tiny_diffusion_model(
        VOCAB,
        prompt_length=LENGTH,
        image_size=IMAGE,
        patch_size=2,
        block_channels=(32,),
        attention_heads=1,
        text_hidden_size=16,
    )
    return model, diffusion.init_params(model, jax.random.PRNGKey(0))


def _prompts(count):
    tokens = np.zeros((count, LENGTH), np.int32)
    for row in range(count):
        tokens[row, : 2 + row % 3] = 4 + (np.arange(2 + row % 3) + row) % (VOCAB - 4)
        tokens[row, 2 + row % 3] = 2  # <eos>
    return jnp.asarray(tokens), jnp.asarray((tokens != 0).astype(np.int32))


def test_trainable_mask_is_cross_attention_and_bias_scale(model_and_params):
    _, params = model_and_params
    flat_mask = traverse_util.flatten_dict(diffusion.trainable_mask(params))
    flat = traverse_util.flatten_dict(params)
    for path, trainable in flat_mask.items():
        expected = path[0] == "unet" and ("attn2" in path or path[-1] in ("bias", "scale"))
        assert trainable == expected, path
    assert any(
        trainable and "attn2" in path and path[-1] == "kernel" for path, trainable in flat_mask.items()
    )
    assert not any(trainable for path, trainable in flat_mask.items() if path[0] == "text_encoder")
    counted = sum(leaf.size for path, leaf in flat.items() if flat_mask[path]) / sum(
        leaf.size for leaf in flat.values()
    )
    assert diffusion.trainable_fraction(params) == pytest.approx(counted)
    assert 0.01 < counted < 0.3


def test_masked_optimizer_leaves_frozen_weights_bit_identical(model_and_params):
    _, params = model_and_params
    optimizer = diffusion.masked_optimizer(optax.adam(0.1))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    updated = optax.apply_updates(params, updates)
    mask = traverse_util.flatten_dict(diffusion.trainable_mask(params))
    before, after = traverse_util.flatten_dict(params), traverse_util.flatten_dict(updated)
    for path, trainable in mask.items():
        same = np.array_equal(np.asarray(before[path]), np.asarray(after[path]))
        assert same != trainable, path


def test_images_and_samples_round_trip(model_and_params):
    model, params = model_and_params
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, IMAGE, IMAGE, 3))
    samples = diffusion.images_to_samples(model, params, images)
    assert samples.shape == (2, *model.sample_shape) == (2, 12, 8, 8)
    assert float(samples.min()) >= -1.0 and float(samples.max()) <= 1.0
    np.testing.assert_allclose(diffusion.samples_to_images(model, params, samples), images, atol=1e-6)
    # pixel (0, 1) of the image is channel (c=0, dy=0, dx=1) of sample pixel (0, 0)
    assert float(samples[0, 1, 0, 0]) == pytest.approx(2 * float(images[0, 0, 1, 0]) - 1, abs=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_driven_by_the_exact_target_recovers_the_clean_sample(prediction_type):
    """The training target (ε, v or x₀) and the sampler agree: an oracle denoiser that outputs the
    exact target of the current x_t takes DDIM from pure noise to the clean sample."""
    model = diffusion.tiny_diffusion_model(
        VOCAB, prompt_length=LENGTH, image_size=IMAGE, block_channels=(32,), prediction_type=prediction_type
    )
    clean = jax.random.uniform(jax.random.PRNGKey(0), (2, *model.sample_shape), minval=-1.0, maxval=1.0)
    alphas = model.noise_state.common.alphas_cumprod
    timesteps = jnp.array([10, 700])
    noise = jax.random.normal(jax.random.PRNGKey(1), clean.shape)
    target = diffusion.denoising_target(model, clean, noise, timesteps)
    expected = {
        "epsilon": noise,
        "v_prediction": jnp.sqrt(alphas[timesteps])[:, None, None, None] * noise
        - jnp.sqrt(1.0 - alphas[timesteps])[:, None, None, None] * clean,
        "sample": clean,
    }[prediction_type]
    np.testing.assert_allclose(target, expected, atol=1e-5)

    state = model.sampler.set_timesteps(model.sampler_state, 5, clean.shape)
    current = jax.random.normal(jax.random.PRNGKey(2), clean.shape)
    for timestep in np.asarray(state.timesteps):
        times = jnp.full((2,), timestep)
        implied_noise = (current - jnp.sqrt(alphas[timestep]) * clean) / jnp.sqrt(1.0 - alphas[timestep])
        oracle = diffusion.denoising_target(model, clean, implied_noise, times)
        current = model.sampler.step(state, oracle, timestep, current).prev_sample
    np.testing.assert_allclose(current, clean, atol=1e-4)


def test_sampling_is_deterministic_per_prompt_seed(model_and_params):
    model, params = model_and_params
    tokens, mask = _prompts(3)
    keys = diffusion.prompt_keys(jax.random.PRNGKey(3), jnp.arange(3))
    generate = jax.jit(
        lambda params, tokens, mask, keys: diffusion.generate_images(
            model, params, tokens, mask, keys, num_steps=2
        )
    )
    samples, images = generate(params, tokens, mask, keys)
    again, _ = generate(params, tokens, mask, keys)
    np.testing.assert_array_equal(samples, again)
    assert images.shape == (3, IMAGE, IMAGE, 3) and float(images.min()) >= 0 and float(images.max()) <= 1
    # prompt 1's image does not depend on the batch it is drawn in, only on its own key
    reordered, _ = generate(params, tokens[::-1], mask[::-1], keys[::-1])
    np.testing.assert_allclose(reordered[1], samples[1], atol=1e-5)
    other, _ = generate(params, tokens, mask, diffusion.prompt_keys(jax.random.PRNGKey(4), jnp.arange(3)))
    assert float(jnp.abs(other - samples).max()) > 1e-2
    guided = diffusion.sample(
        model, params, tokens, mask, diffusion.initial_noise(model, keys), num_steps=2, guidance_scale=3.0
    )
    assert guided.shape == samples.shape and float(jnp.abs(guided - samples).max()) > 0
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.sample(model, params, tokens, mask, diffusion.initial_noise(model, keys), num_steps=0)


def test_rwr_loss_weights_the_per_example_noise_loss(model_and_params):
    model, params = model_and_params
    tokens, mask = _prompts(4)
    images = jax.random.uniform(jax.random.PRNGKey(5), (4, IMAGE, IMAGE, 3))
    examples = {"samples": diffusion.images_to_samples(model, params, images), "tokens": tokens, "mask": mask}

    def example_loss(params, examples, key):
        return diffusion.noise_prediction_loss(
            model, params, examples["samples"], examples["tokens"], examples["mask"], key
        )

    learner = rwr.RWRLearner(example_loss, batch_size=4, keep_fraction=1.0)
    key = jax.random.PRNGKey(6)
    losses = example_loss(params, examples, key)
    assert losses.shape == (4,) and np.all(np.isfinite(losses))
    weights = jnp.array([2.0, 0.0, 1.0, 1.0])
    weighted, metrics = learner.loss(params, {"examples": examples, "weights": weights}, key)
    assert float(weighted) == pytest.approx(float(jnp.mean(weights * losses)), rel=1e-5)
    assert float(metrics["unweighted_loss"]) == pytest.approx(float(losses.mean()), rel=1e-5)


def _write_tiny_stable_diffusion(directory):
    """A Stable Diffusion directory in diffusers' layout with tiny random weights."""
    from diffusers import FlaxAutoencoderKL, FlaxDDIMScheduler, FlaxUNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer, FlaxCLIPTextModel
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    unet = FlaxUNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",),
        block_out_channels=(32,),
        layers_per_block=1,
        attention_head_dim=1,
        cross_attention_dim=16,
    )
    unet.save_pretrained(directory / "unet", params=jax.jit(unet.init_weights)(jax.random.PRNGKey(0)))
    vae = FlaxAutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 32),
        layers_per_block=1,
        latent_channels=4,
        sample_size=16,
    )
    vae.save_pretrained(directory / "vae", params=jax.jit(vae.init_weights)(jax.random.PRNGKey(1)))
    characters = list(bytes_to_unicode().values())
    words = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({word: i for i, word in enumerate(words)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory / "tokenizer")
    text_config = CLIPTextConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=len(words) - 2,
        eos_token_id=len(words) - 1,
    )
    FlaxCLIPTextModel(text_config, seed=2).save_pretrained(directory / "text_encoder")
    FlaxDDIMScheduler(beta_schedule="scaled_linear", clip_sample=False).save_pretrained(
        directory / "scheduler"
    )


def test_load_a_local_stable_diffusion_and_generate(tmp_path):
    _write_tiny_stable_diffusion(tmp_path)
    model, params = diffusion.load_stable_diffusion(tmp_path, scenes.scene_vocabulary().decode)
    assert set(params) == {"unet", "text_encoder", "vae"}
    assert model.sample_shape == (4, 8, 8) and model.image_size == 16 and model.prompt_length == 16
    tokens, mask = model.tokenize(np.array([[4, 5, 2, 0], [6, 2, 0, 0]]))  # scene ids -> CLIP ids
    assert tokens.shape == (2, 16) and tokens[0, 0] == model.null_tokens[0]
    keys = diffusion.prompt_keys(jax.random.PRNGKey(0), jnp.arange(2))
    samples, images = jax.jit(
        lambda params: diffusion.generate_images(
            model, params, tokens, mask, keys, num_steps=2, guidance_scale=2.0
        )
    )(params)
    assert samples.shape == (2, 4, 8, 8) and images.shape == (2, 16, 16, 3)
    assert np.all(np.isfinite(images))
    fraction = diffusion.trainable_fraction(params)  # the VAE and text encoder count, frozen
    assert 0.0 < fraction < 0.5

    (tmp_path / "vae" / "diffusion_flax_model.msgpack").unlink()
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.bin"):
        diffusion.load_stable_diffusion(tmp_path, scenes.scene_vocabulary().decode)
    with pytest.raises(ValueError, match="not a Stable Diffusion directory"):
        diffusion.load_stable_diffusion(tmp_path / "unet", scenes.scene_vocabulary().decode)
