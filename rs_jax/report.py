"""report.html of a finished run directory: the front, the summary and a λ slider over the soups.

``write_html(run_dir)`` reads what a run wrote (results.json, summary.md, identity.json, the sample
files of the task and the PNG figures) and writes one self-contained ``report.html`` beside them:
data, script, style and images inline, nothing fetched, so it opens from disk. The page draws the
front in the plane of two chosen rewards (RS coloured by λ, MORL, the init, every other soup
family of results.json and the true front where it is known), the spider map for N ≥ 3 rewards,
and a λ slider (N = 2) or a point picker over the simplex grid (N ≥ 3) that shows the chosen
soup's rewards ± standard errors and the samples of the nearest λ that has samples, saying which
λ they belong to.

Samples come from the JSON a task's figures write (``rs_jax.plots``): ``samples.json`` (texts per
label for text; captions or answers with their images for captioning and VQA; an image grid per
row for diffusion) and ``boxes.json`` (true and predicted boxes for grounding). A label names its
soup as ``pipeline.figure_soups`` and the tasks write it (``soup_weights``); rows that are no soup
(questions, references) are shown beside every λ, MORL rows are left out.

``python -m rs_jax.report RUN_DIR`` rebuilds the file; a directory that is not a finished run is
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import pathlib
import re
import sys
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

SAMPLE_FILES = ("samples.json", "boxes.json")
# Rows of a sample figure that are inputs or references: shown beside every λ.
CONTEXT_LABELS = ("question", "reference")


def load_run(run_dir: str | pathlib.Path) -> dict[str, Any]:
    """results.json of a finished run.

    Raises:
      ValueError: ``run_dir`` lacks results.json (with its RS points) or summary.md.
    """
    directory = pathlib.Path(run_dir)
    path = directory / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{directory} is not a finished run: no readable results.json ({type(error).__name__})."
        ) from error
    missing = [key for key in ("reward_names", "expert_names", "rs") if not results.get(key)]
    if missing or not (directory / "summary.md").is_file():
        what = f"results.json without {', '.join(missing)}" if missing else "no summary.md"
        raise ValueError(f"{directory} is not a finished run: {what}.")
    return results


def soup_weights(label: str, expert_names: Sequence[str]) -> list[float] | None:
    """The λ of a sample label, or None when the label names no soup of the experts.

    ``"λ=x"`` and ``"λ=x: …"`` are the soups (1 − x, x) of the first two experts (zeros for the
    others), ``"expert NAME"`` that expert, ``"uniform soup"`` the uniform λ.
    """
    count = len(expert_names)
    if label.startswith("λ="):
        lam = float(label[2:].split(":")[0])
        return [1.0 - lam, lam] + [0.0] * (count - 2)
    if label.startswith("expert ") and label[len("expert ") :] in expert_names:
        return np.eye(count)[list(expert_names).index(label[len("expert ") :])].tolist()
    if label == "uniform soup":
        return [1.0 / count] * count
    return None


def _point(label: str, outputs: list[dict[str, Any]], expert_names: Sequence[str], **extra: Any) -> dict:
    return {"label": label, "lambda": soup_weights(label, expert_names), "outputs": outputs, **extra}


def _samples_from(numbers: dict[str, Any], expert_names: Sequence[str]) -> dict[str, Any] | None:
    """One sample file's JSON as ``{kind, items, points}``: ``items`` the inputs of each sample (image,
    context texts, true box), ``points`` the outputs of each label (text, image, box, IoU)."""
    if "samples" in numbers:  # text: "prompt | response" per prompt
        labelled = numbers["samples"]
        count = len(next(iter(labelled.values())))
        points = [
            _point(label, [{"text": t} for t in texts], expert_names) for label, texts in labelled.items()
        ]
        return {"kind": "texts", "items": [{} for _ in range(count)], "points": points}
    if "texts" in numbers and "models" not in numbers:  # captions or answers under images
        texts, images = numbers["texts"], numbers.get("images")
        count = len(next(iter(texts.values())))
        items = [
            {
                "image": images[i] if images else None,
                "context": [[label, texts[label][i]] for label in CONTEXT_LABELS if label in texts],
            }
            for i in range(count)
        ]
        points = [
            _point(label, [{"text": t} for t in row], expert_names)
            for label, row in texts.items()
            if label not in CONTEXT_LABELS
        ]
        return {"kind": "captions", "items": items, "points": points}
    if "row_labels" in numbers and numbers.get("images"):  # an image grid: one row per model
        titles = numbers.get("column_titles") or [""] * len(numbers["images"][0])
        notes = numbers.get("row_notes") or [None] * len(numbers["row_labels"])
        items = [{"context": [["prompt", title]]} for title in titles]
        points = [
            _point(label, [{"image": image} for image in row], expert_names, note=note)
            for label, row, note in zip(numbers["row_labels"], numbers["images"], notes)
        ]
        return {"kind": "images", "items": items, "points": points}
    if "models" in numbers:  # grounding: true vs predicted boxes
        images, texts = numbers.get("images"), numbers.get("texts") or []
        items = [
            {
                "image": images[i] if images else None,
                "context": [["expression", texts[i]]] if i < len(texts) else [],
                "true_box": box,
            }
            for i, box in enumerate(numbers["true_boxes"])
        ]
        points = [
            _point(
                label, [{"box": b, "iou": iou} for b, iou in zip(model["boxes"], model["iou"])], expert_names
            )
            for label, model in numbers["models"].items()
        ]
        return {"kind": "boxes", "items": items, "points": points, "grid": numbers.get("grid", 1000.0)}
    return None


def collect_samples(run_dir: str | pathlib.Path, expert_names: Sequence[str]) -> dict[str, Any] | None:
    """The run's samples (``_samples_from`` of the first sample file it has), split into the soups'
    ``points`` (each with its λ) and the ``init``; None when the run stores no samples."""
    for name in SAMPLE_FILES:
        path = pathlib.Path(run_dir) / name
        if not path.is_file():
            continue
        samples = _samples_from(json.loads(path.read_text(encoding="utf-8")), expert_names)
        if samples is None:
            continue
        points = samples.pop("points")
        init = [point for point in points if point["label"] == "init"]
        return samples | {
            "source": name,
            "init": init[0] if init else None,
            "points": [point for point in points if point["lambda"] is not None],
        }
    return None


def markdown_html(markdown: str) -> str:
    """summary.md as HTML: ``#`` headings (as h3, h4, …), pipe tables and paragraphs (text escaped)."""
    blocks, table, paragraph = [], [], []

    def flush() -> None:
        if table:
            rows = [row for row in table if not set(row.replace("|", "").strip()) <= set("-: ")]
            cells = [
                [
                    html.escape(cell.strip().replace("\\|", "|"))
                    for cell in re.split(r"(?<!\\)\|", row.strip().removeprefix("|").removesuffix("|"))
                ]
                for row in rows
            ]
            head = "".join(f"<th>{cell}</th>" for cell in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
            blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            table.clear()
        if paragraph:
            blocks.append("<p>" + "<br>".join(html.escape(line) for line in paragraph) + "</p>")
            paragraph.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            if paragraph:
                flush()
            table.append(line)
            continue
        if table or not line.strip():
            flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 6)  # under the page's own h1 and h2
            blocks.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            paragraph.append(line.strip())
    flush()
    return "\n".join(blocks)


def _numbers(weights: list[float] | None, rewards: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """One point of results.json as ``{weights, mean, stderr}``, rewards in the order of ``names``."""
    return {
        "weights": weights,
        "mean": [rewards[name]["mean"] for name in names],
        "stderr": [rewards[name]["stderr"] for name in names],
    }


def _points(entries: Sequence[dict[str, Any]] | None, names: Sequence[str], key: str) -> list[dict]:
    return [_numbers(entry[key], entry["rewards"], names) for entry in entries or []]


def report_data(run_dir: str | pathlib.Path) -> dict[str, Any]:
    """Everything the page shows, JSON-ready: the points of results.json, summary.md as HTML, the
    samples and every PNG of the run directory as a data URI."""
    directory = pathlib.Path(run_dir)
    results = load_run(directory)
    names, experts = results["reward_names"], results["expert_names"]
    identity = directory / "identity.json"
    task = json.loads(identity.read_text(encoding="utf-8")).get("task") if identity.is_file() else None
    init = results.get("init")  # reward name -> mean and stderr of the pre-trained init
    return {
        "title": " · ".join(dict.fromkeys([task or "rs_jax run", directory.resolve().name])),
        "reward_names": names,
        "expert_names": experts,
        "rs": _points(results["rs"], names, "lambda"),
        "morl": _points(results.get("morl"), names, "mu"),
        "init": None if init is None else _numbers(None, init, names),
        "families": {
            family: _points(entries, names, "lambda")
            for family, entries in (results.get("extra_soups") or {}).items()
        }
        | ({"true front": _points(results["true_front"], names, "mu")} if results.get("true_front") else {}),
        "summary_html": markdown_html((directory / "summary.md").read_text(encoding="utf-8")),
        "samples": collect_samples(directory, experts),
        "figures": {
            path.name: "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            for path in sorted(directory.glob("*.png"))
        },
    }


def render(data: dict[str, Any]) -> str:
    """The page of ``report_data``: the template with the data inlined as JSON."""
    template = resources.files("rs_jax").joinpath("report_template.html").read_text(encoding="utf-8")
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return template.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)


def write_html(run_dir: str | pathlib.Path) -> pathlib.Path:
    """Writes ``run_dir/report.html`` and returns its path (``ValueError`` if no finished run)."""
    path = pathlib.Path(run_dir) / "report.html"
    path.write_text(render(report_data(run_dir)), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rs_jax.report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a finished run directory (results.json, summary.md)")
    args = parser.parse_args(argv)
    try:
        path = write_html(args.run_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
