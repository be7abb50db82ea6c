"""The text RLHF task end to end on the smoke preset."""

import json
import math

import pytest
from mixing_checks import check_decoding_mixing

from configs import text as text_config
from tasks import text

pytestmark = [pytest.mark.third_party, pytest.mark.usefixtures("fast_compile")]


def test_smoke_run_writes_results_samples_and_both_lora_modes(smoke_run):
    run_dir, results = smoke_run(text.main, "decoding_mixing=true")
    check_decoding_mixing(results, (run_dir / "summary.md").read_text())
    # MOD's λ = 1 is the second expert alone: same key, same samples, same perplexity as RS's.
    assert results["base_perplexity"]["MOD (decoding-time mixing)"][-1]["perplexity"] == pytest.approx(
        results["base_perplexity"]["rs"][-1]["perplexity"]
    )
    assert results["reward_names"] == ["positive", "concise"]
    assert len(results["rs"]) == text_config.get_config("smoke").rs_points
    assert "RS with LoRA factors averaged" in results["extra_soups"]
    assert [point["mu"] for point in results["morl"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    samples = json.loads((run_dir / "samples.json").read_text())["samples"]
    assert {"init", "λ=0", "λ=0.5", "λ=1"} <= set(samples)
    assert all(" | " in line for lines in samples.values() for line in lines)
    for name in ("front.png", "summary.md", "lmc.json"):
        assert (run_dir / name).exists(), name
    # Fluency beside reward: every point's perplexity under the frozen base, from its NLL column.
    perplexity = results["base_perplexity"]
    assert len(perplexity["rs"]) == len(results["rs"]) and len(perplexity["runs"]) == 3
    assert set(perplexity) >= {"init", "runs", "rs", "RS with LoRA factors averaged"}
    for rows in perplexity.values():
        for row in rows:
            assert row["perplexity"] == pytest.approx(math.exp(row["mean_nll"])) and row["perplexity"] > 1
    # λ = 1 is the second expert (μ = (0, 1)): same params, same samples, same perplexity.
    assert perplexity["rs"][-1]["perplexity"] == pytest.approx(perplexity["runs"][-1]["perplexity"])
    (pair,) = results["reward_agreement_at_init"]["pairs"]
    assert pair["rewards"] == ["positive", "concise"]
    assert pair["pearson"] is None or -1 <= pair["pearson"] <= 1  # None: a constant column
    assert "perplexity of each point's samples" in (run_dir / "summary.md").read_text()


def test_resume_with_a_larger_budget_resaves_the_experts_and_other_changes_are_refused(tmp_path, capsys):
    from rs_jax import checkpoint

    run_dir = tmp_path / "run"
    text.main(["--preset", "smoke", "--out", str(run_dir)])
    assert checkpoint.latest_step(run_dir / "experts" / "positive") == 2
    before = (run_dir / "config.json").read_text()
    with pytest.raises(SystemExit) as refused:  # another seed defines other weights
        text.main(["--preset", "smoke", "--out", str(run_dir), "--resume", "--set", "seed=1"])
    assert refused.value.code == 2 and "seed: 0 in the run, 1 now" in capsys.readouterr().err
    assert (run_dir / "config.json").read_text() == before
    text.main(["--preset", "smoke", "--out", str(run_dir), "--resume", "--set", "budget.finetune_updates=3"])
    assert checkpoint.latest_step(run_dir / "experts" / "positive") == 3
    assert json.loads((run_dir / "results.json").read_text())["config"]["budget"]["finetune_updates"] == 3


def test_an_out_folder_of_other_files_is_refused_and_kept(tmp_path, capsys):
    (tmp_path / "results.json").write_text("mine")
    with pytest.raises(SystemExit) as refused:
        text.main(["--preset", "smoke", "--out", str(tmp_path)])
    assert refused.value.code == 2 and "holds no rs_jax run" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json"]
    assert (tmp_path / "results.json").read_text() == "mine"
