"""One GPU lease, one command: four paper-scale measurements into gpu.json, sized for 8 minutes on an H200.

    bash benchmarks/gpu/wheels.sh                        # on a machine with PyPI: fills .whl/
    python3 benchmarks/gpu/run.py --out "$OUT/gpu.json"   # on the GPU machine, .whl/ carried
    python benchmarks/gpu/run.py --dry-run               # the same code on CPU, tiny sizes

The GPU machine has jax, flax, optax, orbax-checkpoint and chex but neither brax, mujoco nor a
transformers with Flax classes, and no network: where ``.whl/`` holds wheels and unless
``--no-install``, this script first installs them into the ``--site`` folder (``pip
install --no-index --no-deps --target``) and restarts itself with that folder first on
``PYTHONPATH``. The project itself comes from this checkout.

Parts, each timed after compilation with its compile time beside it, each written to the JSON
as soon as it ends (a part that raises records its error and the next one runs):

a. ``ppo``: our PPO trainer's env steps per second on the "paper" locomotion preset
   (configs/locomotion.py: humanoid, 4096 envs, policy 6×512), brax's ``ppo.train`` beside it
   where brax's trainer runs on the installed jax (``benchmarks/ppo_throughput.py``).
b. ``multi_run``: the preset's N = 5 runs (2 experts + 3 MORL μ) vmapped in one program vs one
   after another, after compilation (goal: ≤ 0.6 of the sequential wall time).
c. ``sweep``: ``soup.sweep(strategy="auto")`` of 11 soups of two ~1.1B-parameter LLaMA-shaped
   bf16 experts, each scored on 8×512 tokens, over the floor of 11 single evaluations (goal
   ≤ 1.1), and the device's peak memory against (chunk + N) copies of the params.
d. ``lora_ppo``: one LoRA PPO iteration (rollout + update) on SmolLM2-135M; the real weights
   only where the project's asset loader and its cached asset are there (the 98 MB GGUF does
   not fit the 64 MiB a GPU call carries), else random weights of its shape, saying why.

``--parts`` selects parts; ``--deadline`` (default 420 s) skips, and records as skipped, the parts
that would start after that many seconds, so that a slow compile costs the last parts, not the
whole lease.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".whl"
PARTS = ("ppo", "multi_run", "sweep", "lora_ppo")


def install_wheels_and_restart(wheels: Sequence[str], site: Path, argv: Sequence[str]) -> None:
    """Installs ``wheels`` into ``site`` and re-runs this script with it first on ``PYTHONPATH``."""
    pip_install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    subprocess.run([*pip_install, "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], check=True)
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    os.execve(sys.executable, [sys.executable, __file__, *argv, "--no-install"], env)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever backend is there")
    parser.add_argument("--no-install", action="store_true", help="use the packages already importable")
    parser.add_argument("--site", type=Path, default=Path("/tmp/site"), help="where the wheels go")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--deadline", type=float, default=420.0, help="seconds after which no part starts")
    return parser.parse_args(argv)


def versions() -> dict[str, str]:
    """Versions of the packages the measurements depend on (absent ones left out)."""
    from importlib import metadata

    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "brax", "mujoco-mjx")
    found = {}
    for name in (*names, "transformers", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the selected parts and returns (and writes) the result."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    wheels = sorted(glob.glob(str(WHEELS / "*.whl")))
    if wheels and not args.no_install:
        install_wheels_and_restart(wheels, args.site, argv)
    start = time.perf_counter()
    for path in (ROOT, ROOT / "benchmarks", Path(__file__).resolve().parent):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import gpu_parts as parts  # after the wheels: brax, transformers 4.x
    from common import machine_info, write_result

    sizes = parts.tiny_sizes() if args.dry_run else parts.paper_sizes()
    measures = {
        "ppo": parts.ppo_throughput_part,
        "multi_run": parts.multi_run_part,
        "sweep": parts.sweep_part,
        "lora_ppo": parts.lora_ppo_part,
    }
    result: dict = {
        "benchmark": "gpu",
        "dry_run": args.dry_run,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "versions": versions(),
    }
    for name in args.parts:
        elapsed = time.perf_counter() - start
        if elapsed > args.deadline:
            result[name] = f"skipped: {elapsed:.0f} s elapsed, past the --deadline of {args.deadline:.0f} s"
        else:
            part_start = time.perf_counter()
            try:
                result[name] = {**measures[name](sizes), "part_wall_s": time.perf_counter() - part_start}
            except Exception as error:  # one part's failure must not lose the others' numbers
                result[name] = f"failed after {time.perf_counter() - part_start:.0f} s: {error!r}"
        print(name, json.dumps(result[name], default=str)[:2000], flush=True)
        result["total_wall_s"] = time.perf_counter() - start
        write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
