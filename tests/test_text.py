"""The text RLHF task end to end on the smoke preset."""

import json

import pytest

from configs import text as text_config
from tasks import text

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]


def test_smoke_run_writes_results_samples_and_both_lora_modes(tmp_path):
    run_dir = tmp_path / "run"
    text.main(["--preset", "smoke", "--out", str(run_dir)])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["reward_names"] == ["positive", "concise"]
    assert len(results["rs"]) == text_config.get_config("smoke").rs_points
    assert "RS with LoRA factors averaged" in results["extra_soups"]
    assert [point["mu"] for point in results["morl"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    samples = json.loads((run_dir / "samples.json").read_text())["samples"]
    assert {"init", "λ=0", "λ=0.5", "λ=1"} <= set(samples)
    assert all(" | " in line for lines in samples.values() for line in lines)
    for name in ("front.png", "summary.md", "lmc.json"):
        assert (run_dir / name).exists(), name
