"""Reference runs: each task's CPU default, its results.json kept as benchmarks/results/tasks/<task>.json.

    python benchmarks/tasks.py                      # all six tasks, one after the other
    python benchmarks/tasks.py text locomotion      # some of them
    python benchmarks/tasks.py vqa --set seed=1 --suffix seed1   # another seed, kept beside
    python benchmarks/tasks.py text --preset real --suffix real  # another preset, kept beside
    python benchmarks/tasks.py locomotion --shard --suffix shard  # one device per core, kept beside

Each task runs as ``python -m tasks.<task> --out runs/reference/<task>`` in its own process (its wall
time and peak resident memory are measured from outside); the run's results.json is copied with a
``reference_run`` entry (command, wall time, peak memory, machine, load average, date, and the
run's own timing.json: seconds per phase and its devices) and the run's samples.json, if it
writes one. The README's
result tables are generated from these files by ``python benchmarks/readme.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

from common import machine_info, read_run, write_result

TASKS = ("locomotion", "text", "captioning", "grounding", "vqa", "diffusion")
RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results", "tasks")


def run_task(
    task: str, overrides: list[str], suffix: str, runs_root: str, preset: str = "", shard: bool = False
) -> dict:
    """Runs one task's CPU default (or ``preset``, with ``--shard``) in a subprocess; returns its
    results with the run's record."""
    name = f"{task}-{suffix}" if suffix else task
    out = os.path.join(runs_root, name)
    if os.path.exists(out):
        shutil.rmtree(out)
    options = (["--preset", preset] if preset else []) + (["--shard"] if shard else [])
    command = [sys.executable, "-m", f"tasks.{task}", *options, "--out", out]
    if overrides:
        command += ["--set", *overrides]
    machine = machine_info()
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {os.waitstatus_to_exitcode(status)}).")
    results = read_run(out)
    results["reference_run"] = {
        "command": " ".join(
            ["python", "-m", f"tasks.{task}", *options, *(["--set", *overrides] if overrides else [])]
        ),
        "wall_seconds": round(wall, 1),
        "peak_memory_gb": round(usage.ru_maxrss / 2**20, 2),
        "machine": machine,
        "load_average_1m_at_end": os.getloadavg()[0],
        "date": datetime.date.today().isoformat(),
    }
    timing = os.path.join(out, "timing.json")  # the run's own seconds per phase and its devices
    if os.path.exists(timing):
        with open(timing) as handle:
            results["reference_run"]["timing"] = json.load(handle)
    write_result(os.path.join(RESULTS_DIR, f"{name}.json"), results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tasks", nargs="*", default=list(TASKS), choices=(*TASKS, []))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--preset", default="", help="a preset other than the task's default")
    parser.add_argument("--suffix", default="", help="file name suffix, e.g. seed1 (default: the reference)")
    parser.add_argument("--runs", default="runs/reference", help="where the run directories go")
    parser.add_argument("--shard", action="store_true", help="run the tasks with --shard")
    args = parser.parse_args()
    for task in args.tasks or TASKS:
        run_task(task, args.set, args.suffix, args.runs, args.preset, args.shard)


if __name__ == "__main__":
    main()
