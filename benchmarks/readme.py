"""The README's per-task result blocks, generated from benchmarks/results/tasks/<task>.json.

    python benchmarks/readme.py           # rewrite the blocks in README.md
    python benchmarks/readme.py --check   # exit 1 if README.md and the files disagree

A block sits between ``<!-- results:<task> -->`` and ``<!-- /results:<task> -->``: the reference
run's command, wall time, memory and machine, a table of the init, the experts, a few soups, the
MORL runs and the extra soups, the front-quality numbers of every family, the RS efficiency, the
linear-mode-connectivity check and whether each expert beats its rivals on its own reward
(paired differences). ``tests/test_readme.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from rs_jax import starting_points
from rs_jax.config import MERGE_RULES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results", "tasks")
README = os.path.join(ROOT, "README.md")
REPRODUCIBILITY = os.path.join(ROOT, "benchmarks", "results", "reproducibility.json")
PPO_THROUGHPUT = os.path.join(ROOT, "benchmarks", "results", "ppo.json")
PPO_CORES = os.path.join(ROOT, "benchmarks", "results", "ppo_cores.json")


def _escape(text: str) -> str:
    """Text safe inside a Markdown table cell (reward names such as ``vx - |a|^2``)."""
    return text.replace("|", "\\|")


def _cell(reward: dict[str, Any]) -> str:
    mean, stderr = reward["mean"], reward.get("stderr")
    return f"{mean:.4g}" if not stderr else f"{mean:.4g} ± {stderr:.2g}"


def _weights(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2g}" for v in values) + ")"


def _uniform_soup(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The point whose λ is closest to uniform."""
    n = len(points[0]["lambda"])
    return min(points, key=lambda p: sum(abs(w - 1.0 / n) for w in p["lambda"]))


def _shown_soups(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RS points of the table: λ = 0.3, 0.5, 0.7 for two experts, else the most uniform soup."""
    if len(points[0]["lambda"]) == 2:
        return [p for p in points if any(abs(p["lambda"][1] - lam) < 1e-6 for lam in (0.3, 0.5, 0.7))]
    return [_uniform_soup(points)]


def _label(symbol: str, weights: list[float]) -> str:
    """A point's label in results.json's ``base_perplexity`` (``tasks.text``): ``λ=[0.3, 0.7]``."""
    return f"{symbol}={[round(float(w), 2) for w in weights]}"


def _perplexities(results: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(family, point label) -> the perplexity of that point's samples under the base, if reported."""
    return {
        (family, row["point"]): row["perplexity"]
        for family, rows in (results.get("base_perplexity") or {}).items()
        for row in rows
    }


def samples_block(results: dict[str, Any], members: tuple[str, ...] = ("init", "λ=0", "λ=0.5", "λ=1")) -> str:
    """The run's samples (``samples.json``, kept by benchmarks/tasks.py) for the first two prompts,
    quoted exactly, and how the rewards agree over the init's samples."""
    lines = []
    for pair in (results.get("reward_agreement_at_init") or {}).get("pairs", []):
        a, b = pair["rewards"]
        pearson, spearman = (
            "undefined" if value is None else f"{value:.2f}" for value in (pair["pearson"], pair["spearman"])
        )
        lines.append(
            f"Over the init's {results['reward_agreement_at_init']['samples']} evaluation samples, "
            f"{_escape(a)} and {_escape(b)} correlate with Pearson {pearson} (Spearman {spearman})."
        )
    samples = (results.get("samples") or {}).get("samples")
    if samples:
        lines += [
            "",
            "Samples (prompt words | answer; the first two evaluation prompts, `samples.json`):",
            "",
        ]
        lines.append("```text")
        for member in members:
            for text in samples.get(member, [])[:2]:
                lines.append(f"{member:6} {text}".replace("\n", "\\n"))
        lines.append("```")
    return "\n".join(["", "", *lines]) if lines else ""


def _cpu(machine: dict[str, Any]) -> str:
    """The CPU of a run: its model when recorded (``machine_info``'s ``cpu``), else the processor."""
    return machine.get("cpu", f"{machine['processor']}, model not recorded")


def _cores(machine: dict[str, Any]) -> str:
    """The cores of a run: '2 CPU cores', or '1 of 2 CPU cores' when pinned to fewer (``cores_used``)."""
    used, count = machine.get("cores_used", machine["cpu_count"]), machine["cpu_count"]
    return f"{count} CPU cores" if used == count else f"{used} of {count} CPU cores"


def task_block(results: dict[str, Any]) -> str:
    """The Markdown block of one task's reference results."""
    names = results["reward_names"]
    experts = results["expert_names"]
    run = results["reference_run"]
    machine = run["machine"]
    lines = [
        f"Reference run: `{run['command']}`, {run['wall_seconds'] / 60:.1f} min wall, "
        f"{run['peak_memory_gb']:.1f} GB peak, on {_cores(machine)} ({_cpu(machine)}, "
        f"jax {machine['jax']}; load average {machine['load_average_1m_at_start']:.1f} at the start), "
        f"{run['date']}.",
        "",
        "| point | " + " | ".join(map(_escape, names)) + " |",
        "|---" * (len(names) + 1) + "|",
    ]

    perplexities = _perplexities(results)
    if perplexities:
        lines[-2] = lines[-2] + " perplexity under the base |"
        lines[-1] = lines[-1] + "---|"

    def row(label: str, rewards: dict[str, Any], key: tuple[str, str]) -> None:
        cells = [_cell(rewards[name]) for name in names]
        if perplexities:
            cells.append(f"{perplexities[key]:.1f}")
        lines.append(f"| {_escape(label)} | " + " | ".join(cells) + " |")

    if results.get("init"):
        row("pre-trained init", results["init"], ("init", "init"))
    for index, name in enumerate(experts):
        vertex = [1.0 if i == index else 0.0 for i in range(len(experts))]
        point = next(p for p in results["rs"] if p["lambda"] == vertex)
        row(f"expert {name}", point["rewards"], ("rs", _label("λ", vertex)))
    for point in _shown_soups(results["rs"]):
        row(f"RS λ = {_weights(point['lambda'])}", point["rewards"], ("rs", _label("λ", point["lambda"])))
    for point in results.get("morl") or []:
        if max(point["mu"]) < 1.0:
            row(f"MORL μ = {_weights(point['mu'])}", point["rewards"], ("runs", _label("μ", point["mu"])))
    for family, points in (results.get("extra_soups") or {}).items():
        point = _uniform_soup(points)
        label = f"{family}, λ = {_weights(point['lambda'])}"
        row(label, point["rewards"], (family, _label("λ", point["lambda"])))

    summary = results["summary"]
    lines += [
        "",
        "| family | trainings | expected utility ↑ | hypervolume ↑ | IGD ↓ |",
        "|---|---|---|---|---|",
    ]
    families = [("rewarded soups", "rs", summary["rs_trainings"])]
    if "morl_trainings" in summary:
        families.append(("MORL", "morl", summary["morl_trainings"]))
    families += [
        (family, family, f"{summary['rs_trainings']} (same experts)")
        for family in results.get("extra_soups") or {}
    ]
    for label, key, trainings in families:
        igd = summary.get(f"{key}_igd")
        lines.append(
            f"| {_escape(label)} | {trainings} | {summary[key + '_expected_utility']:.4g} | "
            f"{summary[key + '_hypervolume']:.4g} | {'—' if igd is None else f'{igd:.4g}'} |"
        )
    facts = []
    if summary.get("rs_efficiency") is not None:
        facts.append(f"RS efficiency (EU_RS − EU_init)/(EU_MORL − EU_init) = {summary['rs_efficiency']:.3f}")
    facts.append(
        "Linear mode connectivity holds at every λ"
        if summary["lmc_holds_everywhere"]
        else "Linear mode connectivity fails at some λ (the run's lmc.json)"
    )
    specialization = results.get("specialization") or []
    losses = [e for e in specialization if not e["beyond_2_stderr"]]
    if specialization:
        facts.append(
            "Every expert beats the init and the other experts on its own reward by more than 2 paired s.e."
            if not losses
            else "Not beyond 2 paired s.e. on the expert's own reward: "
            + "; ".join(
                f"{e['expert']} vs {e['rival']} ({e['difference']:.3g} ± {e['stderr']:.2g})" for e in losses
            )
        )
    lines += ["", " ".join(fact.rstrip(".") + "." for fact in facts)]
    return "\n".join(lines)


def _outcome_header(reference: dict[str, Any]) -> list[str]:
    names, experts = reference["reward_names"], reference["expert_names"]
    return [
        *(f"expert {e} on {_escape(names[i])}" for i, e in enumerate(experts)),
        "EU RS / MORL",
        "RS efficiency",
        "experts specialize",
    ]


def _outcome_cells(results: dict[str, Any]) -> list[str]:
    """Each expert on its own reward, EU of RS and MORL, RS efficiency, and whether the experts
    specialize: the cells of ``_outcome_header``."""
    names, experts = results["reward_names"], results["expert_names"]
    own = []
    for index in range(len(experts)):
        vertex = [1.0 if i == index else 0.0 for i in range(len(experts))]
        point = next(p for p in results["rs"] if p["lambda"] == vertex)
        own.append(_cell(point["rewards"][names[index]]))
    summary = results["summary"]
    efficiency = summary.get("rs_efficiency")
    return [
        *own,
        f"{summary['rs_expected_utility']:.4g} / {summary['morl_expected_utility']:.4g}",
        "—" if efficiency is None else f"{efficiency:.3f}",
        "yes" if summary.get("experts_specialize") else "no",
    ]


def _table_start(text: str, header: list[str]) -> list[str]:
    """The lines that open a table after a block: a blank line, its sentence, its header row."""
    return ["", "", text, "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]


def seed_block(task: str, reference: dict[str, Any]) -> str:
    """A table of the reference seed and the other seeds' runs (``<task>-seed<k>.json``), if any."""
    paths = sorted(
        name for name in os.listdir(RESULTS_DIR) if name.startswith(f"{task}-seed") and name.endswith(".json")
    )
    if not paths:
        return ""
    runs = [reference, *(_read_json(os.path.join(RESULTS_DIR, name)) for name in paths)]
    header = ["seed", *_outcome_header(reference)]
    lines = _table_start(
        "The same command with other seeds (`--set seed=k`, `benchmarks/tasks.py --suffix seedk`):", header
    )
    for results in runs:
        lines.append("| " + " | ".join([str(results["config"]["seed"]), *_outcome_cells(results)]) + " |")
    return "\n".join(lines)


def other_machines_block(task: str) -> str:
    """The task's runs on another machine type (``other_machines/<task>[-seed<k>].json``), if any:
    what XLA:CPU's code for another CPU moves."""
    directory = os.path.join(RESULTS_DIR, "other_machines")
    if not os.path.isdir(directory):
        return ""
    names = sorted(
        name
        for name in os.listdir(directory)
        if name == f"{task}.json" or (name.startswith(f"{task}-seed") and name.endswith(".json"))
    )
    if not names:
        return ""
    runs = sorted(
        (_read_json(os.path.join(directory, name)) for name in names), key=lambda run: run["config"]["seed"]
    )
    header = ["seed", "machine", "date", *_outcome_header(runs[0])]
    lines = _table_start(
        "The same commands on another machine type (`benchmarks/results/tasks/other_machines/`). XLA:CPU "
        "compiles for each CPU's vector instructions, so float rounding differs from the first update "
        "and training carries the difference on:",
        header,
    )
    for results in runs:
        machine = results["reference_run"]["machine"]
        where = f"{_cores(machine)}, {_cpu(machine)}, jax {machine['jax']}"
        cells = [str(results["config"]["seed"]), where, results["reference_run"]["date"]]
        lines.append("| " + " | ".join([*cells, *_outcome_cells(results)]) + " |")
    return "\n".join(lines)


def _phases(run: dict[str, Any]) -> str:
    """'pre-training / fine-tuning / evaluation' seconds of a reference run, or — if not recorded."""
    timing = run.get("timing")
    if timing is None:
        return "—"
    return " / ".join(f"{timing[f'{phase}_seconds']:.0f}" for phase in ("pretrain", "finetune", "evaluate"))


def shard_block(task: str, reference: dict[str, Any]) -> str:
    """The reference beside the same command with ``--shard`` (``<task>-shard.json``), if there is one."""
    path = os.path.join(RESULTS_DIR, f"{task}-shard.json")
    if not os.path.exists(path):
        return ""
    sharded = _read_json(path)
    header = ["command", "wall", "phases (s)", "cores", *_outcome_header(reference)]
    lines = _table_start(
        f"With `--shard` (`benchmarks/tasks.py {task} --shard --suffix shard`) each core is a CPU device: "
        "pre-training splits its envs over them, fine-tuning each run's envs, and the evaluation its "
        "points. Phases are pre-training / fine-tuning / evaluation. Sharding changes float32 rounding, "
        "which training amplifies, so the numbers differ from the reference's:",
        header,
    )
    for results in (reference, sharded):
        run = results["reference_run"]
        cells = [
            f"`{run['command']}`",
            f"{run['wall_seconds'] / 60:.1f} min",
            _phases(run),
            f"{_cores(run['machine'])}, load {run['machine']['load_average_1m_at_start']:.1f}",
            *_outcome_cells(results),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paired(difference: dict[str, Any]) -> str:
    """A paired difference entry as '+0.050 ± 0.020 **' (** beyond 2 standard errors)."""
    mark = " **" if difference["beyond_2_stderr"] else ""
    return f"{difference['difference']:+.3f} ± {difference['stderr']:.3f}{mark}"


def grounding_variants_block(measured: dict[str, Any]) -> str:
    """The fine-tuning variants of ``benchmarks/grounding_finetune.py``: per size expert, its own
    bucket's accuracy and its paired gains over the init and over its closest rival expert."""
    buckets = list(measured["variants"][0]["accuracy"]["init"]) if measured["variants"] else []
    lines = [
        "Measured by `python benchmarks/grounding_finetune.py` (the three size experts of each variant "
        "from the same init, scored on the same held-out expressions; start *in-run*: pre-trained in "
        "the run (`starting_point=`, `budget.pretrain_updates`), rewarded and scored at IoU > 0.5; "
        "*shipped* (`--shipped`): the shipped starting point with its ±1-bin targets, at IoU > 0.5; per "
        "expert: its own bucket's accuracy init → expert, then its paired gain over the init and over "
        "the rival expert closest to it on that bucket, ± paired s.e.; fine-tuning wall time on one "
        "core while another job used the other):",
        "",
        "| variant | start | seed | held-out per bucket | "
        + " | ".join(f"expert {bucket}" for bucket in buckets)
        + " | fine-tuning |",
        "|---" * (len(buckets) + 5) + "|",
    ]
    for entry in measured["variants"]:
        cells = [f"{entry['variant']} ({_escape(entry['changes'])})", entry["start"], str(entry["seed"])]
        cells.append(str(entry["eval_objects_per_bucket"]))
        for bucket in buckets:
            own = [item for item in entry["specialization"] if item["expert"] == bucket]
            init = next(item for item in own if item["rival"] == "init")
            rival = min(
                (item for item in own if item["rival"] != "init"), key=lambda item: item["difference"]
            )
            accuracy = entry["accuracy"]
            cells.append(
                f"{accuracy['init'][bucket]:.3f} → {accuracy['expert ' + bucket][bucket]:.3f}; "
                f"vs init {_paired(init)}; vs {rival['rival']} {_paired(rival)}"
            )
        cells.append(f"{entry['fine_tuning_seconds'] / 60:.1f} min")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "** : beyond 2 paired standard errors."]
    return "\n".join(lines)


def locomotion_variants_block(measured: dict[str, Any]) -> str:
    """The fine-tuning variants of ``benchmarks/locomotion_finetune.py``: each expert minus the init
    on both rewards (paired, 64 episodes) and the training reward of the first and last updates."""
    header = [
        "variant",
        "expert",
        "seed",
        "R1 = Σ vx: expert − init",
        "R2 = Σ (vx − Σa²): expert − init",
        "R1, sampled actions: expert − init",
        "training reward, first → last update",
        "mean outside [-1, 1], last update",
        "CPU",
    ]
    lines = _table_start(  # the block opens with the sentence: no blank lines before it
        "Measured by `python benchmarks/locomotion_finetune.py` (one expert per row, from the "
        "pre-trained init of its seed, expert minus init on the same 64 episodes, ± paired s.e.; "
        "with the mean action, and in one column with actions sampled from the Gaussian policy, as "
        "the task scores them; rows grouped by variant):",
        header,
    )[2:]
    order = list(dict.fromkeys(entry["variant"] for entry in measured["variants"]))
    for entry in sorted(measured["variants"], key=lambda e: (order.index(e["variant"]), e["seed"])):
        curves = {  # one run: a metric is a one-element list (the runs' axis of the vmapped fit)
            metric: [value[0] if isinstance(value, list) else value for value in values]
            for metric, values in entry["every_10_updates"].items()
        }
        cells = [
            f"{entry['variant']} ({_escape(entry['changes'])})",
            entry["expert"],
            str(entry["seed"]),
            *(
                f"{entry[r]['expert_minus_init']:.4g} ± {entry[r]['stderr']:.2g}"
                + (" **" if entry[r]["expert_minus_init"] > 2 * entry[r]["stderr"] else "")
                for r in ("R1_mean_policy", "R2_mean_policy", "R1_sample_policy")
            ),
            f"{curves['reward'][0]:.3g} → {curves['reward'][-1]:.3g}",
            f"{curves['out_of_bounds'][-1]:.3g}",
            _cpu(entry["machine"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "** : beyond 2 paired standard errors (an improvement)."]
    if not measured["variants"]:
        lines = [*lines[:1], "", "No variant has finished its evaluation yet."]
    diagnostics = measured.get("training_diagnostics") or {}
    if diagnostics:
        lines += [
            "",
            "Training metrics per update (`--diagnostics`; runs still going included): value loss, "
            "Σ max(|mean| − 1, 0)² of the policy mean over the batch, and the training reward "
            "(vx per step for the risky expert).",
            "",
            "| run | phase | updates | value loss: first, largest, last | mean outside [-1, 1]: "
            "first → last | training reward: first → last |",
            "|---|---|---|---|---|---|",
        ]
        for run, phases in diagnostics.items():
            for phase, records in phases.items():
                if not records:
                    continue
                values = [r["value_loss"] for r in records]
                first, last = records[0], records[-1]
                lines.append(
                    f"| {run} | {phase} | {last['update']} | {values[0]:.3g}, {max(values):.3g}, "
                    f"{values[-1]:.3g} | {first['out_of_bounds']:.3g} → {last['out_of_bounds']:.3g} "
                    f"| {first['reward']:.3g} → {last['reward']:.3g} |"
                )
    return "\n".join(lines)


RULE_PREFIXES = tuple(setting.title for setting in MERGE_RULES.values())  # merge_rule_families' labels


def merge_rules_block(reference_runs: dict[str, dict[str, Any]]) -> str:
    """Each merge rule's front against the linear soup (RS) in every task's reference run."""
    lines = [
        "| task | front | expected utility ↑ | hypervolume ↑ | IGD ↓ | EU − EU of RS |",
        "|---|---|---|---|---|---|",
    ]
    for task, results in reference_runs.items():
        summary = results["summary"]
        rules = [name for name in results.get("extra_soups") or {} if name.startswith(RULE_PREFIXES)]
        if not rules:
            continue
        for label, key in [("RS (linear)", "rs"), *((rule, rule) for rule in rules)]:
            difference = summary[f"{key}_expected_utility"] - summary["rs_expected_utility"]
            lines.append(
                f"| {task} | {_escape(label)} | {summary[key + '_expected_utility']:.4g} | "
                f"{summary[key + '_hypervolume']:.4g} | {summary[key + '_igd']:.4g} | "
                + ("—" if key == "rs" else f"{difference:+.3g}")
                + " |"
            )
    return "\n".join(lines)


def starting_points_block(manifests: dict[str, dict[str, Any]]) -> str:
    """The shipped weights (the tasks' starting points and the object classifier): recipe, size,
    hash, training time and held-out quality."""
    lines = [
        "| task | recipe | parameters | file | SHA-256 | pre-training | held-out quality (± s.e.) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, manifest in manifests.items():
        quality = starting_points.quality_text(manifest["quality"], "; ")
        machine = manifest["machine"]
        if "preset" in manifest:  # a task's starting point
            recipe = (
                f"`--preset {manifest['preset']}`, seed {manifest['seed']}, "
                f"{manifest['pretrain_updates']:,} updates"
            )
            seconds = manifest["pretrain_seconds"]
        else:  # the diffusion task's object classifier
            recipe = (
                f"`python -m rs_jax.rewards.{task}`, seed {manifest['seed']}, {manifest['steps']:,} steps"
            )
            seconds = manifest["train_seconds"]
        lines.append(
            f"| {task} | {recipe} | {manifest['param_count']:,} | "
            f"{manifest['bytes'] / 1e6:.1f} MB | `{manifest['sha256'][:12]}` | "
            f"{seconds / 60:.0f} min ({_cores(machine)}, jax {machine['jax']}) | {quality} |"
        )
    return "\n".join(lines)


def _count(number: int, noun: str, plural: str) -> str:
    return f"{number} {noun if number == 1 else plural}"


def lm_ppo_block(name: str, result: dict[str, Any]) -> str:
    """The table of ``benchmarks/results/<name>.json`` (``benchmarks/lm_ppo.py --model smollm2`` and
    trl's side): one PPO iteration's rollout, update and whole time, tokens per second and the
    ratio, with the machine's load."""
    ours, trl = result["ppo"], result["trl"]
    ours_load, trl_load = (
        result["machine"]["load_average_1m_at_start"],
        trl["machine"]["load_average_1m_at_start"],
    )
    cores = ", ".join(str(core) for core in result["machine"]["cores_allowed"])
    return "\n".join(
        [
            f"`benchmarks/results/{name}.json`: both sides pinned to core {cores} of this "
            f"{result['machine']['cpu_count']}-core CPU ({result['machine']['processor']}, jax "
            f"{result['machine']['jax']}; torch {trl['versions']['torch']}), one after the other, load "
            f"average {ours_load:.1f} (ours) and {trl_load:.1f} (trl) at their start.",
            "",
            f"| one PPO iteration, SmolLM2-135M, {ours['prompts']} prompts × {ours['new_tokens']} tokens, "
            f"{_count(ours['epochs'], 'epoch', 'epochs')} × "
            f"{_count(ours['minibatches'], 'minibatch', 'minibatches')} "
            f"| rs_jax | trl {trl['versions']['trl']} "
            f"({trl['ppo']['torch_threads']} torch thread) |",
            "|---|---|---|",
            f"| rollout (generation, log-probs of policy and reference, values) | {ours['rollout_s']:.2f} s "
            f"| {trl['ppo']['rollout_s']:.2f} s ({trl['ppo']['generate_s']:.2f} s of it `generate`) |",
            f"| update | {ours['update_s']:.2f} s | {trl['ppo']['update_s']:.2f} s |",
            f"| whole iteration (median of {ours['repeats']}) | {ours['iteration_s']:.2f} s → "
            f"{ours['response_tokens_per_s']:.1f} tokens/s | {trl['ppo']['iteration_s']:.2f} s → "
            f"{trl['ppo']['response_tokens_per_s']:.1f} tokens/s |",
            f"| first iteration (ours: compile + run) | {ours['first_iteration_s']:.1f} s "
            f"| {trl['ppo']['first_iteration_s']:.1f} s |",
            f"| **ratio ours / trl (tokens/s)** | **{trl['ours_over_trl']:.2f}** | |",
        ]
    )


def _shipped_manifests() -> dict[str, dict[str, Any]]:
    root = starting_points.SHIPPED_ROOT
    return {
        path.name: starting_points.read_manifest(str(path))
        for path in sorted(root.iterdir() if root.is_dir() else [])
        if (path / starting_points.MANIFEST_FILE).is_file()
    }


# task -> (its fine-tuning variants' file, the README block written from it)
VARIANT_BLOCKS = {
    "locomotion": (
        os.path.join(ROOT, "benchmarks", "results", "locomotion_specialization.json"),
        locomotion_variants_block,
    ),
    "grounding": (
        os.path.join(ROOT, "benchmarks", "results", "grounding_specialization.json"),
        grounding_variants_block,
    ),
}


def reproducibility_block(result: dict[str, Any]) -> str:
    """The table of ``benchmarks/results/reproducibility.json`` (``benchmarks/reproducibility.py``):
    per command, whether its two runs wrote the same outputs."""
    lines = ["| command | two runs, same seed | where | date |", "|---|---|---|---|"]
    for entry in result["variants"]:
        machine = entry["machine"]
        outcome = "identical" if entry["identical"] else f"{len(entry['differences'])} values differ"
        cores = " and ".join(str(core) for core in entry["cores"])
        where = (
            f"cores {cores} of a {machine['cpu_count']}-core {machine['processor']} CPU, jax {machine['jax']}"
        )
        lines.append(f"| `{_escape(entry['command'])}` | {outcome} | {where} | {entry['date']} |")
    return "\n".join(lines)


def ppo_throughput_block(result: dict[str, Any], cores: dict[str, Any]) -> str:
    """The tables of ``benchmarks/results/ppo.json`` (``benchmarks/ppo_throughput.py``): per env, our
    PPO against brax's ``ppo.train`` (throughput after compilation, final return over seeds); and
    N = 2 runs trained together against one after the other, on one device (``ppo.json``) and split
    over the CPU cores (``ppo_cores.json``, ``benchmarks/ppo_cores.py``)."""
    lines = [
        "| env | trainer | env steps | env steps/s (after compile) "
        "| final eval return, mean ± s.e. (per seed) | where |",
        "|---|---|---|---|---|---|",
    ]
    pairs = [
        "| env | the pair trains on | updates timed per run | together | one after another "
        "| wall ratio (goal ≤ 0.9) | CPU-seconds ratio |",
        "|---|---|---|---|---|---|---|",
    ]

    def pair_row(env: str, where: str, pair: dict[str, Any]) -> str:
        return (
            f"| {env} | {where} | {pair['timed_updates_per_run']} | {pair['together_wall_seconds']:.1f} s "
            f"| {pair['one_after_another_wall_seconds']:.1f} s "
            f"| **{pair['wall_ratio_together_over_one_after_another']:.2f}** "
            f"| {pair['cpu_ratio_together_over_one_after_another']:.2f} |"
        )

    split = {(entry["env"], entry["squash"]): entry for entry in cores["variants"]}
    for entry in result["variants"]:
        machine, env = entry["machine"], f"{entry['env']} ({entry['backend']})"
        where = f"{_cores(machine)}, jax {machine['jax']}"
        ours = f"rs_jax PPO, `squash={entry['squash']}`"
        for trainer, side in (("brax `ppo.train`", entry["brax_ppo"]), (ours, entry["rs_jax_ppo"])):
            returns = side["final_eval_return"]
            per_seed = ", ".join(f"{value:.0f}" for value in returns["per_seed"])
            lines.append(
                f"| {env} | {trainer} | {side['env_steps']:,} | {side['steps_per_second']:.0f} "
                f"| {returns['mean']:.0f} ± {returns['stderr']:.0f} ({per_seed}) | {where} |"
            )
        lines.append(
            f"| {env} | **ours / brax** | | **{entry['throughput_ratio_ours_over_brax']:.2f}** (goal ≥ 1.0) "
            f"| **{entry['final_return_ratio_ours_over_brax']:.2f}** of the means (goal within 10%) | |"
        )
        pairs.append(
            pair_row(env, f"one device ({where}), {ours}", entry["n2_together_vs_one_after_another"])
        )
        if (entry["env"], entry["squash"]) in split:
            on_cores = split[(entry["env"], entry["squash"])]
            cores_machine = on_cores["machine"]
            pairs.append(
                pair_row(
                    env,
                    f"{on_cores['devices']} devices, one per core, runs split over `expert` "
                    f"({_cores(cores_machine)}, jax {cores_machine['jax']}), {ours}",
                    on_cores["n2_together_vs_one_after_another"],
                )
            )
    return "\n".join([*lines, "", *pairs])


def _read_json(path: str) -> dict[str, Any]:
    with open(path) as handle:
        return json.load(handle)


def _fill(readme: str, marker: str, block: str) -> str:
    """``readme`` with the text between ``<!-- marker -->`` and ``<!-- /marker -->`` replaced by
    ``block``."""
    return _fill_each(readme, re.escape(marker), lambda _: block)


def _fill_each(readme: str, markers: str, block_of: Callable[[str], str]) -> str:
    """``readme`` with every block whose marker matches the regex ``markers`` replaced by
    ``block_of(marker)``."""

    def replace(match: re.Match) -> str:
        marker = match.group(1)
        return f"<!-- {marker} -->\n{block_of(marker)}\n<!-- /{marker} -->"

    return re.sub(rf"<!-- ({markers}) -->\n.*?<!-- /\1 -->", replace, readme, flags=re.DOTALL)


def render(readme: str) -> str:
    """README text with every results block regenerated from its task's file (and each task's
    fine-tuning variants from ``VARIANT_BLOCKS``)."""
    reference_runs = {
        name.removesuffix(".json"): _read_json(os.path.join(RESULTS_DIR, name))
        for name in sorted(os.listdir(RESULTS_DIR))
        if name.endswith(".json") and "-seed" not in name and "-shard" not in name
    }

    def results_block(marker: str) -> str:
        task = marker.removeprefix("results:")
        results = reference_runs[task]
        blocks = (
            samples_block(results),
            seed_block(task, results),
            other_machines_block(task),
            shard_block(task, results),
        )
        return task_block(results) + "".join(blocks)

    readme = _fill_each(readme, r"results:[\w-]+", results_block)
    for task, (path, write_block) in VARIANT_BLOCKS.items():
        if os.path.exists(path):
            readme = _fill(readme, f"variants:{task}", write_block(_read_json(path)))
    readme = _fill(readme, "merge-rules", merge_rules_block(reference_runs))

    def lm_ppo(marker: str) -> str:
        name = marker.removeprefix("benchmark:")
        return lm_ppo_block(name, _read_json(os.path.join(ROOT, "benchmarks", "results", f"{name}.json")))

    readme = _fill_each(readme, r"benchmark:lm_ppo_smollm2\w*", lm_ppo)
    readme = _fill(readme, "reproducibility", reproducibility_block(_read_json(REPRODUCIBILITY)))
    readme = _fill(
        readme, "ppo-throughput", ppo_throughput_block(_read_json(PPO_THROUGHPUT), _read_json(PPO_CORES))
    )
    return _fill(readme, "starting-points", starting_points_block(_shipped_manifests()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if README.md is not up to date")
    args = parser.parse_args()
    with open(README) as handle:
        current = handle.read()
    generated = render(current)
    if args.check:
        if generated != current:
            sys.exit(
                "README.md's result blocks differ from benchmarks/results/tasks/: run benchmarks/readme.py"
            )
        return
    with open(README, "w") as handle:
        handle.write(generated)


if __name__ == "__main__":
    main()
