"""Strict JAX settings for every test; 4 host devices so sharding code can be tested on CPU.

Rank promotion raises (a silent broadcast is the classic shape bug). Dtype promotion stays
"standard": optax's own updates (even plain Adam) mix int32 step counts with Python floats,
which "strict" rejects.
"""

import json
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)


@pytest.fixture(autouse=True)
def _third_party_promotion(request):
    """Tests marked ``third_party`` run transformers/diffusers/brax-physics code, which relies on
    implicit rank promotion; everything else runs strict."""
    if request.node.get_closest_marker("third_party") is None:
        yield
        return
    with jax.numpy_rank_promotion("allow"):
        yield


@pytest.fixture(scope="module")
def third_party_module(fast_compile):
    """For the module-scoped fixtures of a module marked ``third_party``: they are set up before the
    function-scoped promotion above, so they ask for this one (rank promotion allowed for the
    module, fast compile)."""
    with jax.numpy_rank_promotion("allow"):
        yield


@pytest.fixture(scope="module")
def fast_compile():
    """Big HF/brax graphs compiled once and run on tiny shapes: XLA's optimizations cost more
    compile time than they save at run time. Use with ``pytest.mark.usefixtures("fast_compile")``."""
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture
def smoke_run(tmp_path):
    """``smoke_run(main, *settings)``: runs a task's ``main`` on the smoke preset into
    ``tmp_path / "run"`` with the ``--set`` ``settings``; returns (that run directory, its
    results.json)."""

    def run(main, *settings):
        run_dir = tmp_path / "run"
        main(["--preset", "smoke", "--out", str(run_dir), *(["--set", *settings] if settings else [])])
        return run_dir, json.loads((run_dir / "results.json").read_text())

    return run
