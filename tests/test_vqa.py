"""The VQA task end to end on the smoke preset: every output of the run directory."""

import json

import pytest
from mixing_checks import check_decoding_mixing

from configs import vqa as vqa_config
from tasks import vqa

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]


def test_smoke_run_writes_the_whole_run_directory(smoke_run):
    run_dir, results = smoke_run(vqa.main, "decoding_mixing=true")
    check_decoding_mixing(results, (run_dir / "summary.md").read_text())
    assert results["reward_names"] == ["accuracy", "meteor"]
    assert len(results["rs"]) == vqa_config.get_config("smoke").rs_points
    assert len(results["morl"]) == 3  # the two experts and μ = 0.5
    for name in ("front.png", "lambda_curves.png", "samples.png", "summary.md", "lmc.json"):
        assert (run_dir / name).exists(), name
    texts = json.loads((run_dir / "samples.json").read_text())["texts"]
    assert {"question", "reference", "init", "λ=0", "λ=0.5", "λ=1"} <= set(texts)
    assert len(texts["question"]) == vqa_config.get_config("smoke").figure_questions
    for name in ("accuracy", "meteor"):
        assert (run_dir / "experts" / name).is_dir()


def test_unknown_reward_is_a_clear_error():
    with pytest.raises(ValueError, match="sharpness"):
        vqa.build(vqa_config.VQAConfig(rewards=("accuracy", "sharpness")))
