"""Do the size experts of tasks.grounding specialize? Fine-tuning variants, measured.

    python benchmarks/grounding_finetune.py                      # every variant below
    python benchmarks/grounding_finetune.py baseline ce0.2       # some of them

By default each variant starts from the CPU model pre-trained in the run
(``budget.pretrain_updates``, kept in ``runs/grounding_finetune/pretrain-cpu-seed<seed>-<updates>``,
checkpointed, so a rerun reuses it) and rewards IoU > 0.5 (``IN_RUN``; entries whose ``start`` is
"in-run"); ``--shipped`` starts from the shipped weights with their targets (``SHIPPED_START``).
It fine-tunes the three size experts of each variant exactly as ``rs_jax.pipeline.finetune`` does
(the same learner, budget and keys, no MORL run), and scores them and the init on the same
held-out expressions (``--eval-objects``, balanced over the three buckets): each model's accuracy
per bucket and the paired differences of each expert against its rivals on its own bucket
(``experiment.paired_specialization``). Results are merged into
benchmarks/results/grounding_specialization.json (one entry per variant, seed and start; a rerun
replaces its entry).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [path for path in sys.path if os.path.abspath(path or ".") != HERE]  # benchmarks/tasks.py
from configs import grounding as grounding_config  # noqa: E402
from rs_jax import config as config_lib  # noqa: E402
from rs_jax import experiment, pipeline  # noqa: E402
from rs_jax.rewards import boxes  # noqa: E402
from tasks import grounding  # noqa: E402

sys.path.insert(0, HERE)
from common import merge_variant_entry  # noqa: E402

RESULT = os.path.join(HERE, "results", "grounding_specialization.json")
DESCRIPTION = (
    "Fine-tuning variants of tasks.grounding's CPU default: accuracy (IoU > 0.5) per size bucket "
    "of the init and the three size experts on the same held-out expressions, and each expert "
    "minus each rival on its own bucket (paired)."
)

# The init of the default entries: pre-trained in the run; and of the --shipped entries: the
# shipped starting point and its recipe's targets (±1 bin); both rewarded at IoU > 0.5, with the
# paper's data (referred objects drawn uniformly) unless a variant sets rewarded_share
IN_RUN = ["starting_point=", "iou_threshold=0.5", "rewarded_share=0"]
SHIPPED_START = ["starting_point=shipped", "iou_threshold=0.5", "location_sigma=1", "rewarded_share=0"]

# name -> (what it changes, config overrides of the CPU default)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the paper's data: referred objects drawn uniformly", []),
    "ce0.2": ("cross-entropy weight 0.2 instead of 1 (REINFORCE weight 5)", ["supervised_weight=0.2"]),
    "ce0": ("no cross-entropy term: REINFORCE alone", ["supervised_weight=0"]),
    "lr1e-3": ("fine-tuning step size 1e-3 instead of 5e-4", ["budget.finetune_learning_rate=1e-3"]),
    "lr1e-4": ("fine-tuning step size 1e-4 instead of 5e-4", ["budget.finetune_learning_rate=1e-4"]),
    "lr2e-5": ("fine-tuning step size 2e-5 instead of 5e-4", ["budget.finetune_learning_rate=2e-5"]),
    "updates1000": ("1000 fine-tuning updates instead of 500", ["budget.finetune_updates=1000"]),
    "samples8": ("8 sampled boxes per expression instead of 4", ["num_samples=8"]),
    "share1": (
        "each expert's referred objects of its own size wherever the scene has one (52% of its "
        "batches instead of 33%; the CPU default)",
        ["rewarded_share=1"],
    ),
}


def run_variant(
    name: str, seed: int, eval_objects: int, root: str, preset: str = "cpu", shipped: bool = False
) -> dict:
    """Fine-tunes the three size experts under a variant's config; their accuracies and paired
    differences on the same held-out expressions."""
    what, overrides = VARIANTS[name]
    config = config_lib.override(
        grounding_config.get_config(preset),
        [
            *(SHIPPED_START if shipped else IN_RUN),
            *overrides,
            f"seed={seed}",
            "morl=false",
            f"eval_objects={eval_objects}",
        ],
    )
    config_lib.validate(config)
    task = grounding.build(config)
    pretrain_dir = os.path.join(root, f"pretrain-{preset}-seed{seed}-{config.budget.pretrain_updates}")
    params, carry = pipeline.pretrain(pretrain_dir, task, resume=True)
    phase = task.finetuning(params, carry)
    run_dir = os.path.join(root, f"{name}-{preset}-seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    start = time.perf_counter()
    trained = pipeline.finetune(run_dir, task, phase)
    seconds = time.perf_counter() - start
    _, _, eval_key = pipeline.phase_keys(seed)
    n_buckets = len(boxes.SIZE_BUCKETS)
    samples = np.stack([np.asarray(phase.evaluate(part, eval_key)) for part in trained.runs])
    init_samples = np.asarray(phase.evaluate(trained.init, eval_key))[None]
    mask = np.asarray(phase.reward_mask)
    means, stderrs = experiment.mean_and_stderr(samples, axis=1, mask=mask)
    init_means, init_stderrs = experiment.mean_and_stderr(init_samples, axis=1, mask=mask)
    experts = experiment.Evaluation(np.eye(n_buckets), means, stderrs, samples)
    init = experiment.Evaluation(np.ones((1, n_buckets)) / n_buckets, init_means, init_stderrs, init_samples)
    specialization = experiment.paired_specialization(experts, init, boxes.SIZE_BUCKETS, mask)
    accuracy = {"init": dict(zip(boxes.SIZE_BUCKETS, init_means[0].round(4).tolist()))}
    for bucket, row in zip(boxes.SIZE_BUCKETS, means):
        accuracy[f"expert {bucket}"] = dict(zip(boxes.SIZE_BUCKETS, row.round(4).tolist()))
    entry = {
        "variant": name,
        "changes": what,
        "overrides": overrides,
        "seed": seed,
        "preset": preset,
        "start": "shipped" if shipped else "in-run",
        "eval_objects_per_bucket": int(mask.sum(axis=0).min()),
        "fine_tuning_seconds": round(seconds, 1),
        "accuracy": accuracy,
        "specialization": specialization,
        "every_expert_beats_every_rival": all(item["beyond_2_stderr"] for item in specialization),
    }
    print(json.dumps(entry), flush=True)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="*", default=[], choices=(*VARIANTS, []))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-objects", type=int, default=1500, help="held-out expressions, all buckets")
    parser.add_argument("--preset", default="cpu", help="smoke: seconds, to check the script (not kept)")
    parser.add_argument(
        "--shipped",
        action="store_true",
        help="start from the shipped weights and their targets (SHIPPED_START)",
    )
    parser.add_argument("--runs", default="runs/grounding_finetune", help="where the run directories go")
    args = parser.parse_args()
    for name in args.variants or list(VARIANTS):
        entry = run_variant(name, args.seed, args.eval_objects, args.runs, args.preset, args.shipped)
        if args.preset == "cpu":
            merge_variant_entry(RESULT, DESCRIPTION, entry, ("variant", "seed", "start"))


if __name__ == "__main__":
    main()
