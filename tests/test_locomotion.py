"""The locomotion task end to end on its smoke preset (brax halfcheetah; ~2.5 min, mostly compiles)."""

import json

import numpy as np
import pytest

from rs_jax import checkpoint
from tasks import locomotion


def test_bad_override_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        locomotion.main(["--preset", "smoke", "--set", "ppo.num_env=3"])
    assert exit_info.value.code == 2
    assert "Unknown config key 'ppo.num_env'" in capsys.readouterr().err


@pytest.mark.third_party  # brax's physics relies on implicit rank promotion
@pytest.mark.usefixtures("fast_compile")
def test_locomotion_smoke_end_to_end_sharded(tmp_path):
    """With --shard over conftest.py's 4 CPU devices: each run's envs and the evaluated points are
    split over them, and ppo.evaluate's rollouts run inside the sharded sweep."""
    summary = locomotion.main(["--preset", "smoke", "--out", str(tmp_path), "--shard"])
    for name in [
        "config.json",
        "results.json",
        "lmc.json",
        "summary.md",
        "front.png",
        "lambda_curves.png",
        "pretrain/metrics.jsonl",
        "finetune/metrics.jsonl",
    ]:
        assert (tmp_path / name).exists(), name
    results = json.loads((tmp_path / "results.json").read_text())
    assert [point["lambda"][1] for point in results["rs"]] == [0.0, 0.5, 1.0]
    assert [point["mu"][1] for point in results["morl"]] == [0.0, 0.5, 1.0]
    rs_means = np.array([[p["rewards"][n]["mean"] for n in results["reward_names"]] for p in results["rs"]])
    morl_means = np.array(
        [[p["rewards"][n]["mean"] for n in results["reward_names"]] for p in results["morl"]]
    )
    # The soups at λ = 0 and 1 are the experts, which are the MORL runs at μ = 0 and 1.
    np.testing.assert_allclose(rs_means[[0, -1]], morl_means[[0, -1]], rtol=1e-5, atol=1e-5)
    # R2 = R1 - Σa² ≤ R1 for every point.
    assert np.all(rs_means[:, 1] <= rs_means[:, 0] + 1e-6)
    _, manifests = checkpoint.restore_experts(
        [tmp_path / "experts" / "risky", tmp_path / "experts" / "cautious"]
    )
    assert manifests[0].base_model == manifests[1].base_model
    assert summary["rs_trainings"] == 2 and summary["morl_trainings"] == 3
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["shard"] and len(timing["devices"]) == 4
    assert all(timing[f"{phase}_seconds"] > 0 for phase in ("pretrain", "finetune", "evaluate"))
    # The merge rules' fronts at the RS grid, scored like RS (config merge_rules).
    for rule in ("TIES (density 0.2)", "DARE (p 0.5)"):
        assert [point["lambda"] for point in results["extra_soups"][rule]] == [
            p["lambda"] for p in results["rs"]
        ]
        assert {f"{rule}_expected_utility", f"{rule}_hypervolume", f"{rule}_igd"} <= set(summary)
    finetune_log = [
        json.loads(line) for line in (tmp_path / "finetune" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(finetune_log[-1]["reward"]) == 3  # three runs trained in one vmapped program
    # Running again into the same directory without --resume is refused and changes nothing.
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        locomotion.main(["--preset", "smoke", "--out", str(tmp_path), "--shard"])
    assert exit_info.value.code == 2
    assert (tmp_path / "results.json").read_text() == before


@pytest.mark.third_party
def test_pretraining_reward_equals_brax_halfcheetah_reward():
    import jax
    import jax.numpy as jnp
    from brax import envs
    from brax.envs.wrappers.training import VmapWrapper

    from rs_jax.rewards import locomotion as rewards

    env = VmapWrapper(envs.get_environment("halfcheetah", backend="positional"))
    step = jax.jit(env.step)
    state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 3))
    actions = jax.random.uniform(jax.random.PRNGKey(1), (3, env.action_size), minval=-1.0, maxval=1.0)
    next_state = step(state, actions)
    components = rewards.velocity_and_control(state, actions, next_state)
    # brax's own reward is 1.0·vx − 0.1·Σa²: our pre-training weights must reproduce it.
    np.testing.assert_allclose(
        np.asarray(components @ jnp.asarray(rewards.PRETRAIN_WEIGHTS)),
        np.asarray(next_state.reward),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(components[:, 0]), np.asarray(next_state.metrics["x_velocity"]), rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(-components[:, 1]), np.sum(np.asarray(actions) ** 2, axis=1), rtol=1e-5
    )
