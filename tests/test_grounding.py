"""The grounding task end to end on the smoke preset: every output of the run directory."""

import dataclasses
import json

import pytest

from configs import grounding as grounding_config
from tasks import grounding

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]


def test_smoke_run_writes_the_whole_run_directory(smoke_run):
    run_dir, results = smoke_run(grounding.main)
    assert results["reward_names"] == ["small", "medium", "large"]
    assert len(results["rs"]) == 10  # a 4-point simplex grid over 3 experts, the uniform soup included
    assert [point["mu"] for point in results["morl"]][-1] == [1 / 3] * 3
    for point in results["rs"] + results["morl"]:
        assert all(0.0 <= reward["mean"] <= 1.0 for reward in point["rewards"].values())
    for name in ("spider.png", "front.png", "boxes.png", "boxes.json", "summary.md", "lmc.json"):
        assert (run_dir / name).exists(), name
    spider = json.loads((run_dir / "spider.json").read_text())["series"]
    assert "MORL μ=[0.33, 0.33, 0.33]" in spider and "MORL μ=[1.0, 0.0, 0.0]" not in spider  # = the expert
    drawn = json.loads((run_dir / "boxes.json").read_text())["models"]
    assert {"init", "expert small", "expert medium", "expert large", "uniform soup"} <= set(drawn)
    summary = (run_dir / "summary.md").read_text()
    assert "Accuracy (IoU > 0.5) per object size" in summary and "soup λ=[0.33, 0.33, 0.33]" in summary
    for name in ("small", "medium", "large"):
        assert (run_dir / "experts" / name).is_dir()


def test_nothing_to_pretrain_is_a_clear_error():
    config = grounding_config.GroundingConfig(
        budget=dataclasses.replace(grounding_config.BUDGET, pretrain_updates=0)
    )
    with pytest.raises(ValueError, match="Nothing pre-trains"):
        grounding.build(config)


def test_rewarded_share_draws_more_referred_objects_of_the_weighted_size():
    import jax
    import numpy as np

    from rs_jax import config as config_lib
    from rs_jax.rewards import boxes

    config = config_lib.override(grounding_config.get_config("smoke"), ["rewarded_share=1"])
    data = grounding.scene_data(config, jax.random.PRNGKey(1))
    for bucket in range(3):
        drawn = data.sample(jax.random.PRNGKey(0), 600, jax.nn.one_hot(bucket, 3))
        shares = np.bincount(np.asarray(boxes.size_bucket(drawn["boxes"])), minlength=3) / 600
        assert shares[bucket] > 0.45 and shares.argmax() == bucket
    uniform = data.sample(jax.random.PRNGKey(0), 600)
    assert np.bincount(np.asarray(boxes.size_bucket(uniform["boxes"])), minlength=3).max() / 600 < 0.4


def test_rewarded_share_with_a_real_dataset_is_refused_before_loading_it():
    from rs_jax import config as config_lib

    config = config_lib.override(
        grounding_config.get_config("smoke"), ["refs=/nonexistent/refs.p", "rewarded_share=1"]
    )
    with pytest.raises(ValueError, match="with refs= it must be 0"):
        grounding.build(config)
