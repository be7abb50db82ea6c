"""report.html in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium): the
λ slider of a text smoke run and the simplex picker of a three-expert run show the chosen soup's
rewards from results.json and the samples of the nearest λ that has samples."""

import json
import re
import shutil

import jax
import numpy as np
import pytest
import report_runs

from rs_jax import report
from tasks import text

INSTALL = "apt-get install chromium chromium-driver (Debian), then pip install -e '.[dev]' (selenium)"


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium; a missing browser, driver or selenium fails (never skips) the test."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(f"chromium and chromedriver must be on PATH for the report's browser test: {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is missing: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, fast_compile):
    """The text task's smoke run with 4 soups, λ ∈ {0, 1/3, 2/3, 1}: samples are stored at λ ∈ {0,
    0.25, …, 1}, so the middle soups show the samples of the nearest λ."""
    run_dir = tmp_path_factory.mktemp("text") / "run"
    with jax.numpy_rank_promotion("allow"):  # transformers' Flax code (see the third_party marker)
        text.main(["--preset", "smoke", "--out", str(run_dir), "--set", "rs_points=4"])
    return run_dir


def by_css(browser, selector: str) -> list:
    return browser.find_elements("css selector", selector)


def shown_lambda(browser) -> list[float]:
    """The λ the page says is chosen, ``λ = (a, b, …)``."""
    return [float(v) for v in re.findall(r"-?[\d.]+", browser.find_element("id", "lambda-value").text)]


def assert_shows_rewards(browser, point: dict, names: list[str]) -> None:
    for name in names:
        row = browser.find_element("css selector", f'#rewards tr[data-reward="{name}"]')
        mean = float(row.find_element("css selector", ".mean").text)
        stderr = float(row.find_element("css selector", ".stderr").text)
        assert mean == pytest.approx(point["rewards"][name]["mean"], rel=1e-3, abs=1e-12), name
        assert stderr == pytest.approx(point["rewards"][name]["stderr"], rel=0.05, abs=1e-12), name


def test_the_slider_shows_each_soups_rewards_and_its_nearest_samples(browser, text_run):
    from selenium.webdriver.common.keys import Keys

    assert (text_run / "report.html").is_file()  # written by the pipeline
    results = json.loads((text_run / "results.json").read_text())
    stored = json.loads((text_run / "samples.json").read_text())["samples"]
    sample_lambdas = {label: float(label[2:]) for label in stored if label.startswith("λ=")}
    browser.get((text_run / "report.html").as_uri())
    assert browser.find_element("id", "front").find_elements("css selector", ".rs-point")
    slider = browser.find_element("id", "lambda-slider")
    slider.send_keys(Keys.HOME)
    points = sorted(results["rs"], key=lambda point: point["lambda"][1])
    assert len(points) == 4
    notes = []
    for position, point in enumerate(points):
        if position:
            slider.send_keys(Keys.ARROW_RIGHT)
        assert shown_lambda(browser) == pytest.approx(point["lambda"], abs=1e-3)
        assert_shows_rewards(browser, point, results["reward_names"])
        nearest = min(sample_lambdas, key=lambda label: abs(sample_lambdas[label] - point["lambda"][1]))
        title = browser.find_element("id", "samples-title")
        assert title.get_attribute("data-label") == nearest
        assert [card.text for card in by_css(browser, "#samples .output")] == stored[nearest]
        assert [card.text for card in by_css(browser, "#samples .init-output")] == [
            "init: " + line for line in stored["init"]
        ]
        notes.append(browser.find_element("id", "samples-note").is_displayed())
    assert notes == [False, True, True, False]  # λ = 1/3 and 2/3 show the samples of 0.25 and 0.75


def test_the_simplex_picker_shows_the_rewards_and_boxes_of_the_clicked_soup(browser, tmp_path):
    run_dir = report_runs.write_three_expert_run(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    boxes = json.loads((run_dir / "boxes.json").read_text())
    browser.get(report.write_html(run_dir).as_uri())
    assert browser.find_element("id", "spider-chosen")
    weights = {label: report.soup_weights(label, report_runs.EXPERTS) for label in boxes["models"]}
    stored = {label: lam for label, lam in weights.items() if lam is not None}  # the λ with samples
    for index in (0, 2, 4, 5):
        browser.find_element("css selector", f'.simplex-point[data-index="{index}"]').click()
        point = results["rs"][index]
        assert shown_lambda(browser) == pytest.approx(point["lambda"], abs=1e-3)
        assert_shows_rewards(browser, point, results["reward_names"])
        distances = {label: np.abs(np.subtract(w, point["lambda"])).sum() for label, w in stored.items()}
        nearest = min(distances, key=distances.get)
        assert browser.find_element("id", "samples-title").get_attribute("data-label") == nearest
        shown = [
            [float(rect.get_attribute(key)) for key in ("x", "y", "width", "height")]
            for rect in by_css(browser, "#samples .predicted-box")
        ]
        expected = [
            [min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)]
            for x0, y0, x1, y1 in boxes["models"][nearest]["boxes"]
        ]
        np.testing.assert_allclose(shown, expected, rtol=1e-6)
        exact = np.allclose(stored[nearest], point["lambda"])
        assert browser.find_element("id", "samples-note").is_displayed() == (not exact)
