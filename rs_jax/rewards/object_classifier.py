"""Which colour-shape objects an image shows: a multi-label classifier trained on the scene world.

It scores generated images against their prompts (the diffusion task's "objects drawn right" beside
the Fréchet distance): a small convolutional network maps a (B, H, W, 3) image in [0, 1], resized
to ``IMAGE_SIZE``, to (B, P) logits, one per (colour, shape) pair of ``rs_jax.data.scenes``
(P = 7 colours × 5 shapes = 35, ``pair_targets``), max-pooled over positions so that an object
counts wherever it stands. It is trained by sigmoid cross-entropy on freshly drawn scenes of
``WORLD`` (``train``); an object is found where its pair's probability exceeds one half
(``objects_found``). The package ships one (``rs_jax/pretrained/object_classifier``, loaded by
``load``), built by::

    python -m rs_jax.rewards.object_classifier --out rs_jax/pretrained/object_classifier
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rs_jax import machine, starting_points
from rs_jax.data import scenes

PyTree = Any
NUM_PAIRS = len(scenes.COLOURS) * len(scenes.SHAPES)
IMAGE_SIZE = 32
WORLD = scenes.reading_config("captions", image_size=IMAGE_SIZE, max_objects=3, num_captions=1)
NAME = "object_classifier"  # the manifest's ``task``
# (kernel size, stride, output channels as a multiple of the width) of the convolutions
_LAYERS = ((3, 1, 1), (3, 1, 2), (4, 2, 2), (4, 2, 4), (3, 1, 4))


def init_params(key: jax.Array, width: int = 16) -> PyTree:
    """He-normal convolutions (``_LAYERS``, 3 → ``width`` → … → 4·``width`` channels) and a dense
    (4·``width``, ``NUM_PAIRS``) read-out with zero biases."""
    keys = jax.random.split(key, len(_LAYERS) + 1)
    params, channels = {}, 3
    for i, (size, _, multiple) in enumerate(_LAYERS):
        fan_in = size * size * channels
        params[f"conv{i}"] = {
            "kernel": jax.random.normal(keys[i], (size, size, channels, multiple * width))
            * np.sqrt(2 / fan_in),
            "bias": jnp.zeros(multiple * width),
        }
        channels = multiple * width
    params["readout"] = {
        "kernel": jax.random.normal(keys[-1], (channels, NUM_PAIRS)) / np.sqrt(channels),
        "bias": jnp.zeros(NUM_PAIRS),
    }
    return params


def logits(params: PyTree, images: jax.Array) -> jax.Array:
    """(B, ``NUM_PAIRS``) logits of (B, H, W, 3) images in [0, 1] (resized to ``IMAGE_SIZE``)."""
    if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        images = jax.image.resize(images, (images.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3), "linear")
    hidden = images * 2.0 - 1.0
    for i, (_, stride, _) in enumerate(_LAYERS):
        layer = params[f"conv{i}"]
        hidden = jax.lax.conv_general_dilated(
            hidden, layer["kernel"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        hidden = jax.nn.relu(hidden + layer["bias"].reshape(1, 1, 1, -1))
    pooled = hidden.max(axis=(1, 2))
    return pooled @ params["readout"]["kernel"] + params["readout"]["bias"][None, :]


def pair_index(objects: scenes.SceneObjects) -> jax.Array:
    """(B, M) each object slot's colour-shape pair, colour · 5 + shape (absent slots included)."""
    return objects.colour * len(scenes.SHAPES) + objects.shape


def pair_targets(objects: scenes.SceneObjects) -> jax.Array:
    """(B, ``NUM_PAIRS``) float 0/1: the colour-shape pairs of each scene's present objects."""
    one_hot = jax.nn.one_hot(pair_index(objects), NUM_PAIRS) * objects.present[..., None]
    return one_hot.max(axis=1)


def objects_found(params: PyTree, images: jax.Array, objects: scenes.SceneObjects) -> jax.Array:
    """(B, 2) per image: the share of its present ``objects`` whose colour-shape pair the
    classifier detects (probability > 0.5), and the share of its detected pairs that are among
    them (1 where it detects none)."""
    detected = logits(params, images) > 0.0
    targets = pair_targets(objects) > 0.5
    found = jnp.take_along_axis(detected, pair_index(objects), axis=1) & objects.present
    recall = found.sum(axis=1) / jnp.maximum(objects.present.sum(axis=1), 1)
    right = (detected & targets).sum(axis=1)
    precision = jnp.where(detected.any(axis=1), right / jnp.maximum(detected.sum(axis=1), 1), 1.0)
    return jnp.stack([recall, precision], axis=1)


def train(
    key: jax.Array,
    steps: int,
    world: scenes.SceneConfig = WORLD,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    width: int = 16,
) -> PyTree:
    """The classifier's params after ``steps`` Adam updates (cosine step size) of sigmoid
    cross-entropy on ``batch_size`` fresh scenes of ``world`` each.

    One compiled step called from Python: inside ``lax.scan`` XLA:CPU compiles convolution
    gradients to code about 10× slower (jax-ml/jax#12868)."""
    init_key, data_key = jax.random.split(key)
    params = init_params(init_key, width)
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1)))

    def loss(params, drawn: scenes.Scenes) -> jax.Array:
        return optax.sigmoid_binary_cross_entropy(
            logits(params, drawn.images), pair_targets(drawn.objects)
        ).mean()

    @jax.jit
    def step(params, opt_state, step_key):
        grads = jax.grad(loss)(params, scenes.sample_scenes(step_key, batch_size, world))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    for step_key in jax.random.split(data_key, steps):
        params, opt_state = step(params, opt_state, step_key)
    return params


def quality(params: PyTree, key: jax.Array, count: int = 3000) -> dict[str, dict[str, float]]:
    """On ``count`` held-out scenes of ``WORLD``, mean and standard error of: an object is found,
    overall and per size bucket (``scenes.SIZES``), and a detected pair is in its scene."""
    drawn = jax.jit(scenes.sample_scenes, static_argnums=(1, 2))(key, count, WORLD)
    detected = np.asarray(logits(params, drawn.images) > 0.0)
    objects = jax.tree_util.tree_map(np.asarray, drawn.objects)
    found = np.take_along_axis(detected, np.asarray(pair_index(objects)), axis=1)
    outcomes = {"objects_found": found[objects.present]}
    for index, size in enumerate(scenes.SIZES):
        outcomes[f"objects_found_{size}"] = found[objects.present & (objects.size == index)]
    outcomes["detections_right"] = (np.asarray(pair_targets(drawn.objects)) > 0.5)[detected]
    return {
        name: {"mean": float(values.mean()), "stderr": float(values.std(ddof=1) / np.sqrt(values.size))}
        for name, values in outcomes.items()
    }


def load(directory: str = starting_points.SHIPPED) -> PyTree:
    """The verified classifier params in ``directory`` (``SHIPPED``: the package's); a missing or
    altered file is a ValueError naming it and the command that rebuilds it."""
    like = jax.eval_shape(init_params, jax.random.key(0))
    return starting_points.load(directory, like, NAME)[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Trains the classifier and writes it with its manifest (``starting_points.save``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="directory for params.safetensors and manifest.json")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    key = jax.random.key(args.seed)
    params = train(jax.random.fold_in(key, 0), args.steps)
    seconds = time.perf_counter() - start
    measures = quality(params, jax.random.fold_in(key, 1))
    manifest = starting_points.save(
        args.out,
        params,
        {
            "task": NAME,
            "seed": args.seed,
            "steps": args.steps,
            "world": {"image_size": WORLD.image_size, "max_objects": WORLD.max_objects},
            "quality": measures,
            "train_seconds": round(seconds, 1),
            "machine": machine.machine_info(),
            "date": datetime.date.today().isoformat(),
            "rebuild": f"python -m rs_jax.rewards.object_classifier --out {args.out} --steps {args.steps} "
            f"--seed {args.seed}",
        },
    )
    print(
        f"{args.out}: {manifest['param_count']} params, {seconds:.0f} s; "
        + ", ".join(f"{name} {value['mean']:.3f}" for name, value in measures.items()),
        file=sys.stderr,
    )
    return manifest


if __name__ == "__main__":
    main()
