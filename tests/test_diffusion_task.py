"""The text-to-image task end to end on the smoke preset, and its refusals of bad input."""

import dataclasses
import json

import pytest

from configs import diffusion as diffusion_config
from tasks import diffusion

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]


def test_smoke_run_writes_the_whole_run_directory(smoke_run):
    run_dir, results = smoke_run(diffusion.main)
    assert results["reward_names"] == ["colourfulness", "brightness", "skin"]
    assert len(results["morl"]) == 3 + 3 + 1  # the experts, ½ of every pair, the uniform μ
    quality = results["quality"]
    assert 0.0 < quality["trainable_fraction"] < 0.5
    assert all(point["frechet_distance"] >= 0.0 for point in quality["points"])
    assert {c["pair"][1] for c in results["morl_vs_rs_pairs"]} == {"brightness", "skin"}
    assert results["offline"]["images"] == diffusion_config.get_config("smoke").offline_images
    for name in (
        "front.png",
        "spider.png",
        "samples.png",
        "samples.json",
        "quality.png",
        "summary.md",
        "lmc.json",
    ):
        assert (run_dir / name).exists(), name
    samples = json.loads((run_dir / "samples.json").read_text())
    assert samples["row_labels"][0] == "init" and "MORL uniform μ" in samples["row_labels"]
    for name in ("colourfulness", "brightness", "skin"):
        assert (run_dir / "experts" / name).is_dir()


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="sharpness"):
        diffusion.build(diffusion_config.DiffusionConfig(rewards=("colourfulness", "sharpness")))
    with pytest.raises(ValueError, match="not a Stable Diffusion directory"):
        diffusion.build(
            diffusion_config.DiffusionConfig(
                model=str(tmp_path), budget=dataclasses.replace(diffusion_config.BUDGET, pretrain_updates=0)
            )
        )
    with pytest.raises(ValueError, match="scorer"):
        diffusion.build(diffusion_config.DiffusionConfig(rewards=("learned", "skin")))
    with pytest.raises(ValueError, match="Unknown preset"):
        diffusion_config.get_config("huge")
