"""Does the risky expert of tasks.locomotion learn its reward? Fine-tuning variants, measured.

    python benchmarks/locomotion_finetune.py                    # every variant below
    python benchmarks/locomotion_finetune.py baseline warmup10  # some of them

Pre-trains the CPU default once (``runs/locomotion_finetune/pretrain-seed<seed>``, checkpointed, so a
rerun reuses it), then fine-tunes the expert of each variant exactly as ``rs_jax.pipeline.finetune``
does (the same learner, fresh value head, budget and keys), and scores it and the init on the same
64 evaluation episodes (the task's own ``evaluate``): the paired difference of the expert minus the
init on R₁ = Σ vx and on R₂ = Σ (vx − Σa²), with its standard error, and the training reward of
the first and last updates. Results are merged into benchmarks/results/locomotion_specialization.json
(one entry per variant and expert; a rerun of a variant replaces its entry).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

import jax.numpy as jnp
import numpy as np

jnp.zeros(())  # initialize the backend before brax prints its warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [path for path in sys.path if os.path.abspath(path or ".") != HERE]  # benchmarks/tasks.py
from configs import locomotion as locomotion_config  # noqa: E402
from rs_jax import config as config_lib  # noqa: E402
from rs_jax import pipeline  # noqa: E402
from rs_jax.experiment import mean_and_stderr  # noqa: E402
from tasks import locomotion  # noqa: E402

sys.path.insert(0, HERE)
from common import machine_info, merge_variant_entry, write_result  # noqa: E402

RESULT = os.path.join(os.path.dirname(__file__), "results", "locomotion_specialization.json")
DESCRIPTION = (
    "Fine-tuning variants of tasks.locomotion's CPU default: each expert minus the pre-trained init "
    "on the same 64 evaluation episodes (paired), R1 = sum vx, R2 = sum (vx - |a|^2); training "
    "metrics every 10 updates (and the last)."
)

# name -> (what it changes, config overrides of the CPU default)
# Every variant starts from the config with 58 fine-tuning updates, without a warm-up (a warm-up
# at the fine-tuning step size where a variant adds one) and without the bound penalty.
NONE = [
    "budget.finetune_updates=58",
    "budget.value_warmup_updates=0",
    "budget.value_warmup_learning_rate=3e-4",
    "ppo.bound_coef=0",
]
WARMUP = [*NONE, "budget.value_warmup_updates=20", "budget.value_warmup_learning_rate=3e-3"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("no value warm-up, no bound penalty", NONE),
    "warmup20": ("20 updates fitting the fresh value head first", [*NONE, "budget.value_warmup_updates=20"]),
    "bound1": ("penalty 1.0 on the policy mean outside [-1, 1]", [*NONE, "ppo.bound_coef=1"]),
    "warmup20_bound1": (
        "value warm-up 20 and bound penalty 1.0",
        [*NONE, "budget.value_warmup_updates=20", "ppo.bound_coef=1"],
    ),
    "lr1e-4": ("fine-tuning step size 1e-4", [*NONE, "budget.finetune_learning_rate=1e-4"]),
    "pretrain117": (
        "half the pre-training: 117 updates (300k steps)",
        [*NONE, "budget.pretrain_updates=117"],
    ),
    "warmup20_lr3e-3": ("20 updates fitting the fresh value head first, at step size 3e-3", WARMUP),
    "warmup20_lr3e-3_bound1": (
        "the value warm-up above and a penalty 1.0 on the policy mean outside [-1, 1]",
        [*WARMUP, "ppo.bound_coef=1"],
    ),
    "warmup20_lr3e-3_ft116": (
        "the value warm-up above and twice the fine-tuning: 116 updates (297k steps)",
        [*WARMUP, "budget.finetune_updates=116"],
    ),
    "warmup20_lr3e-3_ent1e-2": (
        "the value warm-up above and entropy bonus 1e-2 (10x)",
        [*WARMUP, "ppo.entropy_coef=1e-2"],
    ),
    "warmup20_lr3e-3_ft116_bound0.1": (
        "the value warm-up above, 116 fine-tuning updates and a penalty 0.1 on the policy mean "
        "outside [-1, 1]",
        [*WARMUP, "budget.finetune_updates=116", "ppo.bound_coef=0.1"],
    ),
    "warmup20_lr3e-3_ft116_bound1": (
        "the value warm-up above, 116 fine-tuning updates and a penalty 1.0 on the policy mean "
        "outside [-1, 1]",
        [*WARMUP, "budget.finetune_updates=116", "ppo.bound_coef=1"],
    ),
    "keep_value": ("diagnostic, not the paper's protocol: the pre-trained value head kept", NONE),
    "tanh": (
        "tanh-squashed Gaussian policy (brax's), pre-trained and fine-tuned",
        [*NONE, "ppo.squash=tanh"],
    ),
}
EXPERTS = {"risky": 0, "cautious": 1}


def run_variant(name: str, expert: str, seed: int, root: str, preset: str = "cpu") -> dict:
    """Fine-tunes one expert under a variant's config; its paired differences against the init."""
    what, overrides = VARIANTS[name]
    config = config_lib.override(locomotion_config.get_config(preset), [*overrides, f"seed={seed}"])
    config_lib.validate(config)
    full = locomotion.build(config)
    reward = EXPERTS[expert]
    squash = "" if config.ppo.squash == "clip" else f"-{config.ppo.squash}"
    pretrain_dir = os.path.join(
        root, f"pretrain-{preset}-seed{seed}-{config.budget.pretrain_updates}{squash}"
    )
    params, carry = pipeline.pretrain(pretrain_dir, full, resume=True)
    task = pipeline.Task(
        name=full.name,
        reward_names=(full.reward_names[reward],),
        expert_names=(expert,),
        run_mus=np.ones((1, 1)),
        run_weights=full.run_weights[[0 if reward == 0 else -1]],
        pretraining=pipeline.Pretrained(params, carry),
        finetuning=full.finetuning,
        budget=full.budget,
        seed=seed,
        rs_points=2,
    )
    run_dir = os.path.join(root, f"{name}-{expert}-{preset}-seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    phase = task.finetuning(params, carry)
    if name == "keep_value":
        fresh_start = phase.start

        def start(key):
            fresh, env_carry = fresh_start(key)
            return {**fresh, "value": params["value"]}, env_carry

        phase = dataclasses.replace(phase, start=start)
    start = time.perf_counter()
    trained = pipeline.finetune(run_dir, task, phase)
    seconds = time.perf_counter() - start
    _, _, eval_key = pipeline.phase_keys(seed)
    scores = {}  # (policy, model) -> (64, 2) returns
    for policy in ("mean", "sample"):
        evaluate = (
            locomotion.build(dataclasses.replace(config, eval_deterministic=policy == "mean"))
            .finetuning(params, carry)
            .evaluate
        )
        for label, part in (("init", trained.init), ("expert", trained.runs[0])):
            scores[policy, label] = np.asarray(evaluate(part, eval_key), np.float64)
    with open(os.path.join(run_dir, "finetune", "metrics.jsonl")) as handle:
        history = [json.loads(line) for line in handle]
    entry = {
        "variant": name,
        "changes": what,
        "overrides": overrides,
        "expert": expert,
        "seed": seed,
        "preset": preset,
        "fine_tuning_seconds": round(seconds, 1),
        "machine": machine_info(),
        "every_10_updates": {
            metric: [record[metric] for record in history[::10]] + [history[-1][metric]]
            for metric in ("reward", "value_loss", "out_of_bounds")
        },
    }
    for policy in ("mean", "sample"):
        for column, reward_name in enumerate(("R1", "R2")):
            init, expert_scores = scores[policy, "init"][:, column], scores[policy, "expert"][:, column]
            diff, diff_se = mean_and_stderr(expert_scores - init)
            entry[f"{reward_name}_{policy}_policy"] = {
                "init": float(init.mean()),
                "expert": float(expert_scores.mean()),
                "expert_minus_init": float(diff),
                "stderr": float(diff_se),
            }
        own = entry[f"{('R1', 'R2')[reward]}_{policy}_policy"]
        entry[f"beats_init_beyond_2_stderr_{policy}_policy"] = bool(
            own["expert_minus_init"] > 2 * own["stderr"]
        )
    print(json.dumps(entry))
    return entry


def training_diagnostics(root: str, seed: int) -> dict:
    """Per-update training metrics of every run directory under ``root`` (finished or not): the
    pre-training's last update and each variant's warm-up and fine-tuning updates so far."""
    wanted = ("reward", "value_loss", "out_of_bounds", "entropy")

    def read(path: str) -> list[dict]:
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        return [
            {
                "update": r["update"],
                **{k: r.get(k)[0] if isinstance(r.get(k), list) else r.get(k) for k in wanted},
            }
            for r in records
        ]

    result = {}
    for name in sorted(os.listdir(root)):
        directory = os.path.join(root, name)
        if name.startswith("pretrain-cpu"):
            result[name] = {"pretrain_last": read(os.path.join(directory, "pretrain", "metrics.jsonl"))[-1:]}
        elif name.endswith(f"-cpu-seed{seed}"):
            result[name] = {
                phase: read(os.path.join(directory, phase, "metrics.jsonl"))
                for phase in ("finetune_warmup", "finetune")
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="*", default=[], choices=(*VARIANTS, []))
    parser.add_argument("--expert", default="risky", choices=tuple(EXPERTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="cpu", help="smoke: seconds, to check the script (not kept)")
    parser.add_argument("--runs", default="runs/locomotion_finetune", help="where the run directories go")
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="only record the training metrics of the run directories so far (runs still going included)",
    )
    args = parser.parse_args()
    if args.diagnostics:
        measured = {"variants": []}
        if os.path.exists(RESULT):
            with open(RESULT) as handle:
                measured = json.load(handle)
        measured["training_diagnostics"] = training_diagnostics(args.runs, args.seed)
        measured.setdefault("machine", machine_info())
        write_result(RESULT, measured)
        return
    for name in args.variants or list(VARIANTS):
        entry = run_variant(name, args.expert, args.seed, args.runs, args.preset)
        if args.preset == "cpu":
            merge_variant_entry(RESULT, DESCRIPTION, entry, ("variant", "expert", "seed"))


if __name__ == "__main__":
    main()
