"""rs_jax.report without a browser: the data report.html embeds, the labels' λ and the refused directories."""

import base64
import io
import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
import report_runs
from matplotlib import image

from rs_jax import pipeline, plots, report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return report_runs.write_three_expert_run(tmp_path_factory.mktemp("run"))


def embedded(page: str) -> dict:
    match = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.DOTALL)
    return json.loads(match.group(1).replace("<\\/", "</"))


def test_the_page_embeds_every_point_the_samples_and_figures_and_fetches_nothing(run_dir):
    page = report.write_html(run_dir).read_text(encoding="utf-8")
    data = embedded(page)
    results = json.loads((run_dir / "results.json").read_text())
    names = results["reward_names"]
    for family, key in (("rs", "lambda"), ("morl", "mu")):
        assert [point["weights"] for point in data[family]] == [point[key] for point in results[family]]
        assert data[family] == [
            {
                "weights": point[key],
                "mean": [point["rewards"][name]["mean"] for name in names],
                "stderr": [point["rewards"][name]["stderr"] for name in names],
            }
            for point in results[family]
        ]
    assert data["init"]["mean"] == [results["init"][name]["mean"] for name in names]
    samples, boxes = data["samples"], json.loads((run_dir / "boxes.json").read_text())
    assert samples["kind"] == "boxes" and samples["source"] == "boxes.json"
    # the experts and the uniform soup carry their λ; the init is apart; MORL is no soup
    assert [point["label"] for point in samples["points"]] == list(report_runs.BOX_LABELS[1:5])
    assert [point["lambda"] for point in samples["points"]] == [*np.eye(3).tolist(), [1 / 3] * 3]
    assert samples["init"]["label"] == "init"
    assert samples["points"][0]["outputs"][2]["box"] == boxes["models"]["expert small"]["boxes"][2]
    assert [item["true_box"] for item in samples["items"]] == boxes["true_boxes"]
    assert all(item["image"].startswith("data:image/png;base64,") for item in samples["items"])
    assert set(data["figures"]) == {"boxes.png", "front.png", "spider.png"}
    assert page.count(data["figures"]["front.png"]) == 1  # the data is inlined once
    assert "<table>" in data["summary_html"] and "Rewarded soups vs MORL" in data["summary_html"]
    # self-contained: no external script, style, image or link
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "<link" not in page
    assert "@import" not in page and "fetch(" not in page


def test_sample_labels_name_the_weights_figure_soups_interpolates():
    names = ("a", "b", "c")
    experts = [{"w": jnp.asarray([float(10**i)])} for i in range(3)]
    trained = pipeline.TrainedRuns(runs=experts, mus=np.eye(3), expert_indices=[0, 1, 2], init=experts[0])
    members = pipeline.figure_soups(trained, names, (0.0, 0.5, 1.0, 1.2))
    assert report.soup_weights("init", names) is None
    for label, params in members.items():
        if label == "init":
            continue
        weights = report.soup_weights(label, names)
        expected = sum(w * float(expert["w"][0]) for w, expert in zip(weights, experts))
        assert float(params["w"][0]) == pytest.approx(expected, rel=1e-6), label
    assert report.soup_weights("λ=0.3", ("a", "b")) == pytest.approx([0.7, 0.3])
    for label in ("question", "reference", "MORL uniform μ", "expert z"):
        assert report.soup_weights(label, names) is None


def test_text_samples_keep_every_label():
    numbers = {"reward_names": ["p", "q"], "samples": {"init": ["x | y"], "λ=0": ["x | z"], "λ=1": ["x | w"]}}
    samples = report._samples_from(numbers, ("p", "q"))
    assert samples["kind"] == "texts"
    assert [(p["label"], p["lambda"], p["outputs"][0]["text"]) for p in samples["points"]] == [
        ("init", None, "x | y"),
        ("λ=0", [1.0, 0.0], "x | z"),
        ("λ=1", [0.0, 1.0], "x | w"),
    ]


def test_summary_markdown_becomes_headings_tables_and_escaped_paragraphs():
    page = report.markdown_html("# Title\n\nA <b> & c.\nnext\n\n| m | n |\n|---|---|\n| 1 | 2 |\n## Sub")
    assert page == (
        "<h3>Title</h3>\n<p>A &lt;b&gt; &amp; c.<br>next</p>\n"
        "<table><thead><tr><th>m</th><th>n</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>\n"
        "<h4>Sub</h4>"
    )


def test_a_directory_that_is_no_finished_run_is_one_line_and_exit_2(tmp_path, run_dir, capsys):
    assert report.main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "not a finished run" in error and error.count("\n") == 1
    (tmp_path / "results.json").write_text((run_dir / "results.json").read_text())
    assert report.main([str(tmp_path)]) == 2
    assert "no summary.md" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()
    assert report.main([str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")


def test_figure_images_travel_as_png_data_uris_of_at_most_max_side_pixels():
    picture = np.random.default_rng(0).uniform(0, 1, (300, 40, 3))
    uri = plots.png_data_uri(picture, max_side=100)
    assert uri.startswith("data:image/png;base64,")
    decoded = image.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")
    assert decoded.shape[:2] == (100, 14)  # stride 3
    np.testing.assert_allclose(decoded[..., :3], picture[::3, ::3], atol=1 / 255)
