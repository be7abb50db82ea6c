import json

import numpy as np
import pytest

from rs_jax import demo, experiment, pareto, plots, soup


def test_write_results_three_rewards(tmp_path):
    grid = soup.simplex_grid(3, 3)
    means = grid @ np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2], [0.3, 0.3, 1.0]]) + 0.05
    rs = experiment.Evaluation(grid, means, np.full_like(means, 0.01))
    morl = experiment.Evaluation(np.full((1, 3), 1 / 3), means.mean(0, keepdims=True))
    init = experiment.Evaluation(np.zeros((1, 3)), np.zeros((1, 3)))
    summary = experiment.write_results(
        tmp_path,
        reward_names=["small", "medium", "large"],
        expert_names=["small", "medium", "large"],
        rs=rs,
        morl=morl,
        init=init,
        config={"task": "test"},
    )
    for name in [
        "results.json",
        "lmc.json",
        "summary.md",
        "front.png",
        "front.json",
        "spider.png",
        "spider.json",
    ]:
        assert (tmp_path / name).exists(), name
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["rs"]) == len(grid)
    assert results["rs"][0]["rewards"]["small"]["stderr"] == pytest.approx(0.01)
    assert results["summary"]["rs_trainings"] == 3
    assert summary["lmc_holds_everywhere"]
    assert "rewarded soups | 3" in (tmp_path / "summary.md").read_text()
    # IGD against the non-dominated points of every method of the run.
    front = pareto.reference_front(means, morl.means, init.means)
    assert results["summary"]["rs_igd"] == pytest.approx(pareto.igd(means, front))
    assert results["summary"]["morl_igd"] == pytest.approx(pareto.igd(morl.means, front))
    spider = json.loads((tmp_path / "spider.json").read_text())
    assert "expert small" in spider["series"] and "pre-trained init" in spider["series"]


def test_write_results_needs_the_experts_in_the_grid(tmp_path):
    grid = np.array([[0.5, 0.5]])
    with pytest.raises(ValueError, match="lacks expert 0"):
        experiment.write_results(
            tmp_path,
            reward_names=["a", "b"],
            expert_names=["a", "b"],
            rs=experiment.Evaluation(grid, [[1.0, 1.0]]),
        )


def test_mean_and_stderr():
    mean, stderr = experiment.mean_and_stderr([[1.0], [3.0]])
    assert mean[0] == 2.0 and stderr[0] == pytest.approx(np.sqrt(2) / np.sqrt(2))
    with pytest.raises(ValueError):
        experiment.Evaluation(np.ones((2, 2)), np.ones((3, 2)))


def test_plots_write_png_and_json(tmp_path):
    lambdas = np.linspace(-0.2, 1.2, 8)
    rewards = np.stack([1 - lambdas, lambdas], axis=1)
    plots.plot_lambda_curves(tmp_path / "curves.png", lambdas, rewards, ["a", "b"])
    assert json.loads((tmp_path / "curves.json").read_text())["lambdas"][0] == pytest.approx(-0.2)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=">= 3 rewards"):
        plots.plot_spider(tmp_path / "s.png", {"x": [1, 2]}, ["a", "b"])
    with pytest.raises(ValueError, match="rs_points"):
        plots.plot_front(tmp_path / "f.png", rewards, lambdas[:3])


def test_demo_end_to_end(tmp_path):
    summary = demo.run(str(tmp_path), isotropic=False)
    for name in ["results.json", "lmc.json", "summary.md", "front.png", "lambda_curves.png", "report.html"]:
        assert (tmp_path / name).exists(), name
    # Anisotropic curvatures: one λ per soup is sub-optimal, the Fisher soup recovers the front.
    assert summary["rs_expected_utility"] < summary["fisher_soup_expected_utility"] - 0.05
    assert summary["fisher_soup_expected_utility"] == pytest.approx(
        summary["true_front_expected_utility"], abs=0.01
    )
    assert summary["lmc_holds_everywhere"]


def test_summary_tables_escape_pipes_in_reward_names(tmp_path):
    from rs_jax import report

    grid = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(3, 8, 2)) + np.array([[5.0, 0.0], [2.0, 2.0], [0.0, 5.0]])[:, None]
    names = ("risky R1 = vx", "cautious R2 = vx - |a|^2")
    experiment.write_results(
        tmp_path,
        reward_names=names,
        expert_names=("risky", "cautious"),
        rs=experiment.Evaluation.from_samples(grid, samples),
        init=experiment.Evaluation.from_samples(np.full((1, 2), np.nan), rng.normal(size=(1, 8, 2))),
    )
    markdown = (tmp_path / "summary.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| cautious |")]
    assert rows and all("vx - \\|a\\|^2" in row for row in rows)
    page = report.markdown_html(markdown)
    assert "<td>cautious R2 = vx - |a|^2</td>" in page
    assert all(row.count("<td>") == 5 for row in page.split("<tr>") if "<td>cautious" in row)
