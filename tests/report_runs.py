"""A finished three-expert run directory written without training, for the report tests: results.json,
summary.md and the figures from ``experiment.write_results``, and grounding-style ``boxes.json``."""

import pathlib

import numpy as np

from rs_jax import experiment, plots, soup

EXPERTS = ("small", "medium", "large")
# The rows of the sample figure, as tasks/grounding.py labels them.
BOX_LABELS = ("init", "expert small", "expert medium", "expert large", "uniform soup", "MORL uniform μ")


def write_three_expert_run(run_dir: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Writes a run of 3 experts (RS over a 3-point-per-edge simplex grid: 6 soups, MORL at the
    vertices and the uniform μ, the init) and boxes of 4 scenes for every label of ``BOX_LABELS``."""
    rng = np.random.default_rng(seed)
    grid = soup.simplex_grid(len(EXPERTS), 3)
    mus = np.vstack([np.eye(3), np.full((1, 3), 1 / 3)])

    def evaluation(weights: np.ndarray) -> experiment.Evaluation:
        return experiment.Evaluation(
            weights, rng.uniform(0, 1, (len(weights), 3)), rng.uniform(0.01, 0.05, (len(weights), 3))
        )

    experiment.write_results(
        run_dir,
        reward_names=EXPERTS,
        expert_names=EXPERTS,
        rs=evaluation(grid),
        morl=evaluation(mus),
        init=evaluation(np.full((1, 3), np.nan)),
    )
    scenes = 4
    corners = rng.uniform(0, 500, (len(BOX_LABELS) + 1, scenes, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(50, 400, corners.shape)], axis=-1)
    boxes[2, 0] = boxes[2, 0, [2, 3, 0, 1]]  # an untrained model may predict x1 < x0, y1 < y0
    plots.plot_grounding(
        run_dir / "boxes.png",
        rng.uniform(0, 1, (scenes, 8, 8, 3)),
        boxes[0],
        dict(zip(BOX_LABELS, boxes[1:])),
        texts=[f"the object {i}" for i in range(scenes)],
    )
    return run_dir
