"""Figures of a rewarded-soup run; each PNG gets its numbers as JSON beside it.

``plot_front(path=".../front.png", ...)`` writes ``front.png`` and ``front.json``. The JSON of a figure of
images also holds each image as a PNG data URI (``png_data_uri``), which ``rs_jax.report`` shows per λ.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patches

from rs_jax.rewards import boxes as box_utils


def _write_json_beside(path: str | os.PathLike, numbers: dict[str, Any]) -> None:
    stem, _ = os.path.splitext(os.fspath(path))
    with open(stem + ".json", "w") as handle:
        json.dump(numbers, handle, indent=2)


def png_data_uri(picture: Any, max_side: int = 256) -> str:
    """An (H, W, 3) image with values in [0, 1] as ``data:image/png;base64,…``, subsampled by the
    smallest integer stride that makes its longer side at most ``max_side`` pixels."""
    pixels = np.clip(np.asarray(picture, dtype=np.float64), 0.0, 1.0)
    stride = max(1, math.ceil(max(pixels.shape[:2]) / max_side))
    buffer = io.BytesIO()
    plt.imsave(buffer, pixels[::stride, ::stride], format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _save(figure: plt.Figure, path: str | os.PathLike, numbers: dict[str, Any]) -> None:
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)
    _write_json_beside(path, numbers)


def _catmull_rom(points: np.ndarray, samples_per_segment: int = 16) -> np.ndarray:
    """A smooth curve through ``points`` (P, 2) in their order (uniform Catmull-Rom)."""
    if len(points) < 3:
        return points
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    segments = []
    for p0, p1, p2, p3 in zip(padded[:-3], padded[1:-2], padded[2:-1], padded[3:]):
        segments.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
        )
    return np.vstack([*segments, points[-1:]])


def plot_front(
    path: str | os.PathLike,
    rs_points: Any,
    rs_lambdas: Sequence[float],
    *,
    reward_names: Sequence[str] = ("R1", "R2"),
    morl_points: Any | None = None,
    morl_mus: Sequence[float] | None = None,
    init_point: Any | None = None,
    extra_fronts: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> None:
    """Pareto-front figure in the plane of two rewards.

    Args:
      path: output PNG; the numbers go to the same stem with ``.json``.
      rs_points: (K, 2) rewards of the soups, in λ order.
      rs_lambdas: (K,) λ of each soup (weight of the second expert), for colour.
      reward_names: axis labels (x, y).
      morl_points: optional (M, 2) rewards of MORL runs.
      morl_mus: optional (M,) μ of each MORL run, for labels.
      init_point: optional (2,) rewards of the pre-trained initialization.
      extra_fronts: optional other soups to draw as lines, e.g. {"Fisher soup": (K', 2)}.
      title: figure title.
    """
    rs = np.asarray(rs_points, dtype=np.float64)
    lambdas = np.asarray(rs_lambdas, dtype=np.float64)
    if rs.ndim != 2 or rs.shape[1] != 2 or lambdas.shape != (rs.shape[0],):
        raise ValueError(f"rs_points must be (K, 2) and rs_lambdas (K,); got {rs.shape}, {lambdas.shape}.")
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    curve = _catmull_rom(rs)
    axis.plot(curve[:, 0], curve[:, 1], color="tab:blue", alpha=0.5, lw=1.5, zorder=1)
    scatter = axis.scatter(
        rs[:, 0],
        rs[:, 1],
        c=lambdas,
        cmap="viridis",
        s=40,
        zorder=5,
        edgecolors="k",
        linewidths=0.4,
        label="rewarded soup θ(λ)",
    )
    figure.colorbar(scatter, ax=axis, label="λ (weight of expert 2)")
    numbers: dict[str, Any] = {
        "reward_names": list(reward_names),
        "rs": {"lambdas": lambdas.tolist(), "points": rs.tolist()},
    }
    for name, points in (extra_fronts or {}).items():
        extra = np.asarray(points, dtype=np.float64)
        axis.plot(extra[:, 0], extra[:, 1], "--", lw=1.5, zorder=2, label=name.replace("_", " "))
        numbers.setdefault("extra_fronts", {})[name] = extra.tolist()
    if morl_points is not None:
        morl = np.asarray(morl_points, dtype=np.float64)
        axis.scatter(
            morl[:, 0],
            morl[:, 1],
            marker="*",
            s=140,
            color="tab:red",
            zorder=4,
            edgecolors="k",
            linewidths=0.4,
            label=f"MORL (one run per μ; μ = weight of {reward_names[1]})",
        )
        mus = list(morl_mus) if morl_mus is not None else [None] * len(morl)
        rightmost = morl[:, 0].max(initial=-np.inf)  # no MORL point: an empty (0, 2)
        for (x, y), mu in zip(morl, mus):
            if mu is not None:  # the rightmost label goes to the left of its point, inside the axes
                left = x == rightmost
                axis.annotate(
                    f"μ={mu:g}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(-5 if left else 5, 5),
                    ha="right" if left else "left",
                    fontsize=7,
                )
        numbers["morl"] = {"mus": mus, "points": morl.tolist()}
    if init_point is not None:
        init = np.asarray(init_point, dtype=np.float64)
        axis.scatter([init[0]], [init[1]], marker="X", s=90, color="gray", zorder=4, label="pre-trained init")
        numbers["init"] = init.tolist()
    axis.set_xlabel(reward_names[0])
    axis.set_ylabel(reward_names[1])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    if title:
        axis.set_title(title)
    _save(figure, path, numbers)


def plot_spider(
    path: str | os.PathLike,
    series: Mapping[str, Any],
    reward_names: Sequence[str],
    *,
    title: str | None = None,
) -> None:
    """Spider (radar) map for N ≥ 3 rewards, each axis min-max normalized over all series.

    Args:
      path: output PNG (numbers to ``.json`` beside it, unnormalized).
      series: name -> (R,) rewards, e.g. {"expert small": ..., "uniform soup": ...}.
      reward_names: the R axis labels, R ≥ 3.
    """
    names = list(series)
    values = np.asarray([np.asarray(series[name], dtype=np.float64) for name in names])
    if values.ndim != 2 or values.shape[1] != len(reward_names) or len(reward_names) < 3:
        raise ValueError(
            f"A spider map needs >= 3 rewards and one value per reward in each series; got "
            f"{len(reward_names)} names and values of shape {values.shape}."
        )
    low, high = values.min(axis=0), values.max(axis=0)
    normalized = (values - low) / np.where(high > low, high - low, 1.0)
    angles = np.linspace(0, 2 * np.pi, len(reward_names), endpoint=False)
    closed = np.append(angles, angles[0])
    figure = plt.figure(figsize=(5.5, 5.5))
    axis = figure.add_subplot(projection="polar")
    for name, row in zip(names, normalized):
        ring = np.append(row, row[0])
        axis.plot(closed, ring, lw=1.5, label=name)
        axis.fill(closed, ring, alpha=0.08)
    axis.set_xticks(angles)
    axis.set_xticklabels(list(reward_names))
    axis.set_yticks([0.25, 0.5, 0.75, 1.0])
    axis.set_yticklabels([])
    axis.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.35, 1.1))
    if title:
        axis.set_title(title, pad=20)
    _save(
        figure,
        path,
        {
            "reward_names": list(reward_names),
            "series": {name: row.tolist() for name, row in zip(names, values)},
            "normalization": {"min": low.tolist(), "max": high.tolist()},
        },
    )


def plot_lambda_curves(
    path: str | os.PathLike,
    lambdas: Sequence[float],
    rewards: Any,
    reward_names: Sequence[str],
    *,
    stderr: Any | None = None,
    title: str | None = None,
) -> None:
    """Each reward as a function of λ, with ±1 standard error bands if given.

    Args:
      lambdas: (K,) λ (weight of expert 2).
      rewards: (K, R) rewards of each soup.
      stderr: optional (K, R) standard errors.
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    values = np.asarray(rewards, dtype=np.float64)
    if values.shape != (lam.shape[0], len(reward_names)):
        raise ValueError(f"rewards must be (K={lam.shape[0]}, R={len(reward_names)}); got {values.shape}.")
    figure, axis = plt.subplots(figsize=(5.5, 4.0))
    numbers: dict[str, Any] = {
        "lambdas": lam.tolist(),
        "reward_names": list(reward_names),
        "rewards": values.tolist(),
    }
    errors = None if stderr is None else np.asarray(stderr, dtype=np.float64)
    for j, name in enumerate(reward_names):
        axis.plot(lam, values[:, j], marker="o", ms=4, label=name)
        if errors is not None:
            axis.fill_between(lam, values[:, j] - errors[:, j], values[:, j] + errors[:, j], alpha=0.2)
    if errors is not None:
        numbers["stderr"] = errors.tolist()
    if lam.min() < 0 or lam.max() > 1:
        axis.axvspan(lam.min(), 0, color="gray", alpha=0.1)
        axis.axvspan(1, lam.max(), color="gray", alpha=0.1, label="extrapolation")
    axis.set_xlabel("λ (weight of expert 2)")
    axis.set_ylabel("reward")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title)
    _save(figure, path, numbers)


def plot_captioned_images(
    path: str | os.PathLike,
    images: Any,
    texts: Mapping[str, Sequence[str]],
    *,
    title: str | None = None,
) -> None:
    """Images in a row, each with one text per label under it (e.g. the caption of every λ).

    Args:
      path: output PNG (the texts and images to ``.json`` beside it).
      images: (S, H, W, 3) floats in [0, 1].
      texts: label -> S strings (one per image), drawn in the mapping's order.
    """
    pictures = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    if pictures.ndim != 4 or pictures.shape[-1] != 3:
        raise ValueError(f"images must be (S, H, W, 3); got {pictures.shape}.")
    for label, row in texts.items():
        if len(row) != len(pictures):
            raise ValueError(f"texts[{label!r}] has {len(row)} strings for {len(pictures)} images.")
    lines_per_text = 2
    # The captions hang below the axes; bbox_inches="tight" grows the saved figure to hold them.
    figure, axes = plt.subplots(1, len(pictures), figsize=(3.2 * len(pictures), 3.2), squeeze=False)
    for column, (axis, picture) in enumerate(zip(axes[0], pictures)):
        axis.imshow(picture, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        caption = "\n".join(
            textwrap.fill(f"{label}: {row[column]}", 42, max_lines=lines_per_text, subsequent_indent="    ")
            for label, row in texts.items()
        )
        axis.set_xlabel(caption, fontsize=6.5, loc="left", family="monospace")
    if title:
        figure.suptitle(title)
    _save(
        figure,
        path,
        {
            "texts": {label: list(row) for label, row in texts.items()},
            "images": [png_data_uri(picture) for picture in pictures],
        },
    )


def plot_grounding(
    path: str | os.PathLike,
    images: Any,
    true_boxes: Any,
    predicted_boxes: Mapping[str, Any],
    *,
    texts: Sequence[str] | None = None,
    grid: float = 1000.0,
    title: str | None = None,
) -> None:
    """Images with the true box (green) and each model's predicted box (red): one row per model.

    Args:
      path: output PNG (boxes, IoUs, the grid and the images to ``.json`` beside it).
      images: (S, H, W, 3) floats in [0, 1].
      true_boxes: (S, 4) x0, y0, x1, y1 on a ``grid`` × ``grid`` frame over the image.
      predicted_boxes: model label -> (S, 4) predicted boxes, drawn in the mapping's order.
      texts: optional S strings (the referring expressions), the column titles.
    """
    pictures = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    truth = np.asarray(true_boxes, dtype=np.float64)
    if pictures.ndim != 4 or pictures.shape[-1] != 3 or truth.shape != (len(pictures), 4):
        raise ValueError(
            f"images must be (S, H, W, 3) and true_boxes (S, 4); got {pictures.shape}, {truth.shape}."
        )
    predictions = {label: np.asarray(boxes, dtype=np.float64) for label, boxes in predicted_boxes.items()}
    for label, boxes in predictions.items():
        if boxes.shape != truth.shape:
            raise ValueError(f"predicted_boxes[{label!r}] is {boxes.shape}; expected {truth.shape}.")
    if texts is not None and len(texts) != len(pictures):
        raise ValueError(f"texts has {len(texts)} strings for {len(pictures)} images.")
    if not predictions:
        raise ValueError("predicted_boxes is empty: give at least one model's boxes.")

    rows, columns = len(predictions), len(pictures)
    figure, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.4 * rows), squeeze=False)
    numbers: dict[str, Any] = {
        "true_boxes": truth.tolist(),
        "texts": list(texts or []),
        "grid": grid,
        "images": [png_data_uri(picture) for picture in pictures],
        "models": {},
    }
    for row, (label, boxes) in enumerate(predictions.items()):
        ious = np.asarray(box_utils.iou(boxes, truth)).tolist()
        for column in range(columns):
            axis = axes[row, column]
            axis.imshow(pictures[column], extent=(0, grid, grid, 0), interpolation="nearest")
            for box, colour in ((truth[column], "lime"), (boxes[column], "red")):
                axis.add_patch(
                    patches.Rectangle(
                        (box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, color=colour, lw=1.8
                    )
                )
            axis.text(
                0.02 * grid,
                0.97 * grid,
                f"IoU {ious[column]:.2f}",
                color="white",
                fontsize=7,
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "lw": 0},
            )
            axis.set_xlim(0, grid)
            axis.set_ylim(grid, 0)
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label, fontsize=8)
            if row == 0 and texts is not None:
                axis.set_title(textwrap.fill(texts[column], 28), fontsize=7)
        numbers["models"][label] = {"boxes": boxes.tolist(), "iou": ious}
    figure.suptitle(title or "true box (green) vs predicted box (red)", fontsize=9)
    figure.tight_layout()
    _save(figure, path, numbers)


def plot_image_grid(
    path: str | os.PathLike,
    images: Any,
    row_labels: Sequence[str],
    *,
    column_titles: Sequence[str] | None = None,
    row_notes: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """A grid of images, one row per model (e.g. per λ), one column per prompt (paper Fig. 12).

    Args:
      path: output PNG (labels, titles, each image and its mean RGB to ``.json`` beside it).
      images: (rows, columns, H, W, 3) floats in [0, 1].
      row_labels: one label per row (left of the row).
      column_titles: optional one title per column (e.g. the prompt), wrapped.
      row_notes: optional one short note per row, drawn under its label (e.g. its rewards).
    """
    pictures = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    if pictures.ndim != 5 or pictures.shape[-1] != 3:
        raise ValueError(f"images must be (rows, columns, H, W, 3); got {pictures.shape}.")
    rows, columns = pictures.shape[:2]
    if len(row_labels) != rows or (column_titles is not None and len(column_titles) != columns):
        raise ValueError(
            f"{rows}×{columns} images need {rows} row labels and {columns} column titles; got "
            f"{len(row_labels)} and {None if column_titles is None else len(column_titles)}."
        )
    if row_notes is not None and len(row_notes) != rows:
        raise ValueError(f"row_notes has {len(row_notes)} entries for {rows} rows.")
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.45 * columns + 1.6, 1.5 * rows + 0.8), squeeze=False
    )
    for row in range(rows):
        for column in range(columns):
            axis = axes[row, column]
            axis.imshow(pictures[row, column], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0 and column_titles is not None:
                axis.set_title(textwrap.fill(column_titles[column], 22, max_lines=4), fontsize=5.5)
        label = row_labels[row] + ("\n" + row_notes[row] if row_notes is not None else "")
        axes[row, 0].set_ylabel(label, fontsize=6.5, rotation=0, ha="right", va="center", labelpad=6)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    _save(
        figure,
        path,
        {
            "row_labels": list(row_labels),
            "row_notes": None if row_notes is None else list(row_notes),
            "column_titles": None if column_titles is None else list(column_titles),
            "mean_rgb": pictures.mean(axis=(2, 3)).tolist(),
            "images": [[png_data_uri(picture) for picture in row] for row in pictures],
        },
    )


def plot_bars(
    path: str | os.PathLike,
    labels: Sequence[str],
    values: Any,
    *,
    ylabel: str,
    colors: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """One bar per labelled value (e.g. a quality score per λ), the value written on each bar.

    Args:
      labels: the P bar labels.
      values: (P,) values.
      colors: optional P matplotlib colours (e.g. one per family: soups, MORL, init).
    """
    heights = np.asarray(values, dtype=np.float64)
    if heights.shape != (len(labels),):
        raise ValueError(f"values must be ({len(labels)},) to match labels; got {heights.shape}.")
    figure, axis = plt.subplots(figsize=(max(4.0, 0.42 * len(labels) + 1.5), 3.6))
    bars = axis.bar(range(len(labels)), heights, color=list(colors) if colors is not None else None)
    for bar, height in zip(bars, heights):
        axis.annotate(
            f"{height:.3g}", (bar.get_x() + bar.get_width() / 2, height), ha="center", va="bottom", fontsize=6
        )
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels(list(labels), rotation=60, ha="right", fontsize=7)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3, axis="y")
    if title:
        axis.set_title(title, fontsize=9)
    _save(figure, path, {"labels": list(labels), "values": heights.tolist(), "ylabel": ylabel})
