"""The captioning task end to end on the smoke preset: every output of the run directory."""

import json

import pytest
from mixing_checks import check_decoding_mixing

from configs import captioning as captioning_config
from tasks import captioning

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]


def test_smoke_run_writes_the_whole_run_directory(smoke_run):
    run_dir, results = smoke_run(captioning.main, "decoding_mixing=true")
    check_decoding_mixing(results, (run_dir / "summary.md").read_text())
    ensembling = results["evaluation_cost"]["prediction ensembling (N passes)"]
    assert ensembling["rule"] == "probs" and ensembling["forward_passes_per_token"] == 2
    assert results["reward_names"] == ["bleu1", "rouge"]
    assert len(results["rs"]) == captioning_config.get_config("smoke").rs_points
    extras = set(results["extra_soups"])
    assert {"model soup (bleu1, 2 seeds)", "model soup (rouge, 2 seeds)"} <= extras
    assert {"RS incl. extrapolation", "prediction ensembling (N passes)"} <= extras
    lambdas = [point["lambda"][-1] for point in results["extra_soups"]["RS incl. extrapolation"]]
    assert max(lambdas) > 1.0
    assert len(results["morl"]) == 3  # the two seed-0 experts and μ = 0.5
    for name in ("front.png", "lambda_curves.png", "samples.png", "samples.json", "summary.md", "lmc.json"):
        assert (run_dir / name).exists(), name
    samples = json.loads((run_dir / "samples.json").read_text())["texts"]
    assert {"init", "λ=0", "λ=0.5", "λ=1", "reference"} <= set(samples)
    for name in ("bleu1", "rouge"):
        assert (run_dir / "experts" / name).is_dir()

    with pytest.raises(SystemExit) as exit_info:  # an existing run is never overwritten
        captioning.main(["--preset", "smoke", "--out", str(run_dir)])
    assert exit_info.value.code == 2


def test_unknown_reward_is_a_clear_error():
    config = captioning_config.CaptioningConfig(rewards=("bleu1", "sharpness"))
    with pytest.raises(ValueError, match="sharpness"):
        captioning.build(config)
