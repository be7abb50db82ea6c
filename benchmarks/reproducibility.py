"""Same seed, same machine, same numbers: one task command run twice, its outputs compared.

    python benchmarks/reproducibility.py text --preset real \
        --set budget.finetune_updates=3 rs_points=3 eval_prompts=16 merge_rules.rules=

The two runs go in parallel, each pinned to a core of its own (``--cores 0 1``: both get the same
single-threaded XLA:CPU), with different ``PYTHONHASHSEED`` values (an order that leaked from a set
or a dict of strings would show), into ``runs/reproducibility/<name>-{a,b}``. Every value of their
results.json and samples.json is compared exactly, except ``evaluation_cost`` (wall seconds). The
entry (name ``<task>[-<suffix>]``, command, identical or not, each differing path with both values,
machine) replaces the entry of that name in ``benchmarks/results/reproducibility.json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
from typing import Any

from common import machine_info, merge_variant_entry, read_run

DESCRIPTION = "Same seed, two runs at once: are their outputs identical?"
TIMED_KEYS = frozenset({"evaluation_cost"})
RESULTS = os.path.join(os.path.dirname(__file__), "results", "reproducibility.json")


def differences(a: Any, b: Any, path: str = "") -> list[dict[str, Any]]:
    """Every path where two JSON values differ (``TIMED_KEYS`` skipped), with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted((a.keys() | b.keys()) - TIMED_KEYS)
        return [row for key in keys for row in differences(a.get(key), b.get(key), f"{path}/{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [row for i, (x, y) in enumerate(zip(a, b)) for row in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [{"path": path, "a": a, "b": b}]


def run_twice(command: list[str], outs: tuple[str, str], cores: tuple[int, int]) -> None:
    """Runs ``command --out OUT`` once per (out, core), in parallel, each pinned to its core
    (``taskset``)."""
    processes = []
    for index, (out, core) in enumerate(zip(outs, cores)):
        if os.path.exists(out):
            shutil.rmtree(out)
        processes.append(
            subprocess.Popen(
                ["taskset", "-c", str(core), *command, "--out", out],
                env={**os.environ, "PYTHONHASHSEED": str(index + 1)},
            )
        )
    failed = [process.args for process in processes if process.wait() != 0]
    if failed:
        raise SystemExit(f"{' '.join(failed[0])} failed.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", help="a task of tasks/, e.g. text")
    parser.add_argument("--preset", default="", help="a preset other than the task's default")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--suffix", default="", help="entry name suffix (default: the task's name)")
    parser.add_argument("--cores", type=int, nargs=2, default=(0, 1), help="the two runs' cores")
    parser.add_argument("--runs", default="runs/reproducibility", help="where the run directories go")
    args = parser.parse_args()
    name = f"{args.task}-{args.suffix}" if args.suffix else args.task
    options = ["--preset", args.preset] if args.preset else []
    options += ["--set", *args.set] if args.set else []
    outs = (os.path.join(args.runs, f"{name}-a"), os.path.join(args.runs, f"{name}-b"))
    machine = machine_info()
    run_twice([sys.executable, "-m", f"tasks.{args.task}", *options], outs, tuple(args.cores))
    found = differences(read_run(outs[0]), read_run(outs[1]))
    entry = {
        "name": name,
        "command": " ".join(["python", "-m", f"tasks.{args.task}", *options]),
        "identical": not found,
        "differences": found,
        "cores": list(args.cores),
        "machine": machine,
        "date": datetime.date.today().isoformat(),
    }
    print(f"{name}: {'identical' if not found else f'{len(found)} values differ'}")
    merge_variant_entry(RESULTS, DESCRIPTION, entry, key=("name",))


if __name__ == "__main__":
    main()
