"""``trainer.fit`` stops at the first unhealthy update and keeps only healthy checkpoints;
``metrics.jsonl`` damaged by a kill is repaired on resume, other damage is named."""

import json
import logging
import os

import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
import pytest

from rs_jax.train import trainer


class RunawayLearner:
    """Fits w (4,) to targets 2^t at update t; reports kl = 2^t and a large but harmless kl_coef."""

    def collect(self, params, carry, reward_weights, key):
        scale = jnp.exp2(carry.astype(jnp.float32))
        metrics = {"reward": -scale * reward_weights[0], "kl": scale, "kl_coef": jnp.float32(1e9)}
        return {"targets": jnp.full((2, 4), scale)}, carry + 1, metrics

    def loss(self, params, minibatch, key):
        return jnp.mean(jnp.square(params["w"][None, :] - minibatch["targets"])), {}


SGD = optax.sgd(0.4)
UPDATE = trainer.make_update(RunawayLearner(), SGD, num_epochs=1, num_minibatches=1)


def fresh(optimizer=SGD):
    return trainer.init_state({"w": jnp.zeros(4)}, optimizer, jnp.zeros((), jnp.int32), 0)


def kept_steps(run_dir) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def logged_updates(run_dir) -> list[int]:
    return [json.loads(line)["update"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_kl_above_its_bound_stops_and_names_the_last_healthy_checkpoint(tmp_path):
    health = trainer.HealthBounds(max_kl=20.0)  # kl = 1, 2, 4, 8, 16, 32: update 6 breaks it
    with pytest.raises(trainer.DivergenceError) as error:
        trainer.fit(
            UPDATE, fresh(), jnp.ones(1), 10, run_dir=str(tmp_path), checkpoint_every=2, health=health
        )
    assert not isinstance(error.value, trainer.NonFiniteError)
    assert str(error.value) == (
        "Update 6: kl = 32.0 exceeds its bound 20; stopped, the last healthy checkpoint, "
        f"{tmp_path}/checkpoints/4, is kept."
    )
    assert kept_steps(tmp_path) == [2, 4]
    assert logged_updates(tmp_path) == [1, 2, 3, 4, 5], "the unhealthy update is not logged"


def test_params_above_their_norm_bound_are_never_checkpointed(tmp_path):
    health = trainer.HealthBounds(max_kl=1e9, max_param_norm=10.0)
    with pytest.raises(
        trainer.DivergenceError, match=r"the params' global norm = [0-9.]+ exceeds its bound 10;"
    ):
        trainer.fit(
            UPDATE, fresh(), jnp.ones(1), 10, run_dir=str(tmp_path), checkpoint_every=1, health=health
        )
    stopped_at = logged_updates(tmp_path)[-1] + 1
    assert stopped_at > 1 and kept_steps(tmp_path)[-1] == stopped_at - 1
    with ocp.CheckpointManager(os.path.abspath(tmp_path / "checkpoints")) as manager:
        kept = manager.restore(stopped_at - 1)
    assert float(jnp.linalg.norm(kept["params"]["w"])) <= 10.0


def test_a_huge_learning_rate_stops_at_the_first_update_with_nothing_kept(tmp_path):
    adam = optax.adam(1e10)  # one step moves every weight by ~1e10; the loss of that update is still 1
    update = trainer.make_update(RunawayLearner(), adam, num_epochs=1, num_minibatches=1)
    with pytest.raises(trainer.DivergenceError) as error:
        trainer.fit(update, fresh(adam), jnp.ones(1), 3, run_dir=str(tmp_path), checkpoint_every=1)
    assert str(error.value).startswith("Update 1: the params' global norm = ")
    assert str(error.value).endswith(
        f"exceeds its bound 1e+07; stopped, no checkpoint was saved before it in {tmp_path}/checkpoints."
    )
    assert not kept_steps(tmp_path)


def test_one_diverging_run_of_a_vmapped_fit_stops_it():
    ahead = fresh()._replace(carry=jnp.full((), 3, jnp.int32))  # its targets are 2^3 = 8 from the start
    states = trainer.stack_states([fresh(), ahead])
    bounded = trainer.HealthBounds(max_abs_loss=5.0)
    with pytest.raises(
        trainer.DivergenceError, match=r"^Update 1: \|loss\| = \[1.0, 64.0\] exceeds its bound 5;"
    ):
        trainer.fit(UPDATE, states, jnp.ones((2, 1)), 3, vmapped=True, health=bounded)


def test_a_partial_last_metrics_line_is_repaired_on_resume(tmp_path, caplog):
    trainer.fit(UPDATE, fresh(), jnp.ones(1), 3, run_dir=str(tmp_path), checkpoint_every=1)
    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "a") as handle:
        handle.write('{"update": 4, "loss": 1.2')  # killed while writing update 4's record
    with caplog.at_level(logging.WARNING):
        trainer.fit(UPDATE, fresh(), jnp.ones(1), 4, run_dir=str(tmp_path), resume=True)
    assert f"{metrics}: dropped its incomplete last line 4" in caplog.text
    assert logged_updates(tmp_path) == [1, 2, 3, 4]


def test_a_corrupt_metrics_line_before_the_last_is_an_error_naming_it(tmp_path):
    trainer.fit(UPDATE, fresh(), jnp.ones(1), 3, run_dir=str(tmp_path), checkpoint_every=1)
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + "\x00\x00garbage\n" + "".join(lines[2:]))
    before = metrics.read_text()
    with pytest.raises(ValueError, match=rf"^{metrics} line 2 is not a metrics record \(.*\); fix or remove"):
        trainer.fit(UPDATE, fresh(), jnp.ones(1), 4, run_dir=str(tmp_path), resume=True)
    assert metrics.read_text() == before, "nothing is rewritten"
