"""Pre-train a task once and keep its params as a starting point (``rs_jax.starting_points``).

    python -m tasks.starting_points build grounding --out starts/grounding [--preset cpu] [--set K=V ...]
    python -m tasks.starting_points verify starts/grounding
    python -m tasks.starting_points rescore starts/grounding           # its quality, measured again
    python -m tasks.grounding --set starting_point=starts/grounding      # fine-tunes from it

``build`` runs the task's pre-training phase (``rs_jax.pipeline.pretrain``, resumable in
``<out>/pretrain-run`` until it is saved), scores the pre-trained model with the task's own
evaluation (its rewards on the held-out set, e.g. accuracy per size bucket: the manifest's
``quality``) and writes the params and their manifest (recipe, hash, size, quality, the command
that rebuilds it).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from rs_jax import config as config_lib
from rs_jax import experiment, machine, pipeline, starting_points

TASKS = ("captioning", "grounding", "vqa", "diffusion")


def quality(task: pipeline.Task, params: Any, carry: Any) -> dict[str, dict[str, float]]:
    """The pre-trained model's mean reward (± standard error) on the task's held-out set, per
    reward, and the task's ``starting_quality`` measures."""
    phase = task.finetuning(params, carry)
    _, _, eval_key = pipeline.phase_keys(task.seed)
    samples = np.asarray(phase.evaluate(phase.soup_part(params), eval_key), np.float64)
    rewards = samples[:, : len(task.reward_names)]
    means, stderrs = experiment.mean_and_stderr(rewards, mask=phase.reward_mask)
    measures = dict(zip(task.reward_names, zip(means, stderrs)))
    if task.starting_quality is not None:
        measures |= task.starting_quality(phase.soup_part(params), eval_key)
    return {
        name: {"mean": float(mean), "stderr": None if stderr is None else float(stderr)}
        for name, (mean, stderr) in measures.items()
    }


def build(task_name: str, out: str, preset: str = "cpu", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Pre-trains ``task_name`` under ``preset`` and ``overrides`` and saves the starting point at
    ``out``; returns its manifest."""
    configs = importlib.import_module(f"configs.{task_name}")
    module = importlib.import_module(f"tasks.{task_name}")
    config = config_lib.override(configs.get_config(preset), [*overrides, "starting_point="])
    config_lib.validate(config)
    task = module.build(config)
    if isinstance(task.pretraining, pipeline.Pretrained):
        raise ValueError(f"{task_name} with these settings loads its weights: there is nothing to pre-train.")
    start = time.perf_counter()
    checkpoints = os.path.join(out, "pretrain-run")
    params, carry = pipeline.pretrain(checkpoints, task, resume=True)
    seconds = time.perf_counter() - start
    if carry is not None:
        raise ValueError(
            f"{task_name}'s pre-training keeps a carry (e.g. observation statistics); "
            "a starting point holds params only."
        )
    arguments = " ".join(["--preset", preset, *(["--set", *overrides] if overrides else [])])
    record = {
        "task": task_name,
        "preset": preset,
        "overrides": list(overrides),
        "seed": config.seed,
        "pretrain_updates": config.budget.pretrain_updates,
        "quality": quality(task, params, carry),
        "pretrain_seconds": round(seconds, 1),
        "machine": machine.machine_info(),
        "date": datetime.date.today().isoformat(),
        "rebuild": f"python -m tasks.starting_points build {task_name} --out {out} {arguments}",
    }
    manifest = starting_points.save(out, params, record)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return manifest


def rescore(directory: str) -> dict[str, Any]:
    """Re-measures the ``quality`` of the starting point in ``directory`` under its recipe's current
    evaluation (e.g. after a preset's reward threshold changed) and rewrites its manifest; the
    params and their hash stay."""
    manifest = starting_points.verify(directory)
    task_name = manifest["task"]
    configs = importlib.import_module(f"configs.{task_name}")
    config = config_lib.override(
        configs.get_config(manifest["preset"]), [*manifest["overrides"], f"starting_point={directory}"]
    )
    task = importlib.import_module(f"tasks.{task_name}").build(config)
    manifest = {**manifest, "quality": quality(task, task.pretraining.params, task.pretraining.carry)}
    with open(os.path.join(directory, starting_points.MANIFEST_FILE), "w") as handle:
        json.dump(manifest, handle, indent=2)
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.starting_points",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="pre-train a task once and keep its params")
    make.add_argument("task", choices=TASKS)
    make.add_argument("--out", required=True, help="the starting point's directory")
    make.add_argument("--preset", default="cpu")
    make.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    check = commands.add_parser("verify", help="re-hash a starting point against its manifest")
    check.add_argument("directory")
    score = commands.add_parser("rescore", help="re-measure a starting point's quality under its recipe")
    score.add_argument("directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            manifest = build(args.task, args.out, args.preset, args.set)
        elif args.command == "rescore":
            manifest = rescore(args.directory)
        else:
            manifest = starting_points.verify(args.directory)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(json.dumps({key: manifest[key] for key in ("task", "sha256", "bytes", "param_count", "quality")}))


if __name__ == "__main__":
    main()
