"""Peak memory of merging expert checkpoints, streamed vs loaded at once, for tests/test_distributed.py.

    python tests/stream_memory.py SCRATCH GROUP_BYTES EXPERT_DIR...

Prints one JSON line: the peak growth of this process's anonymous resident memory
(RssAnon: heap and arrays, not the page cache of files it maps) while it
(1) streams the soup with ``checkpoint.interpolate_checkpoints`` and then
(2) restores every expert and interpolates in memory (``restore_experts`` +
``soup.interpolate``). A thread samples /proc/self/status every 0.5 ms. Both
paths are warmed up on a tiny model first so compilation and thread pools are
not counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from rs_jax import checkpoint, soup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_probe(script: str, *args: str) -> dict:
    """Runs ``python tests/<script> ARGS`` from the repository root; returns its last JSON line.

    RssAnon then tracks live arrays: two malloc arenas (glibc otherwise keeps one per thread),
    and a fixed mmap threshold of 128 KiB, so every array above it is mapped and unmapped on
    its own instead of glibc raising the threshold after the first free and leaving freed
    arrays in a fragmented heap (which made the same merge measure 19-36 MB).
    """
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    probe = subprocess.run(
        [sys.executable, os.path.join("tests", script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        raise RuntimeError(f"tests/{script} failed:\n{probe.stderr[-3000:]}")
    return json.loads(probe.stdout.strip().splitlines()[-1])


def rss_anon() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def peak_growth(work) -> tuple[int, object]:
    """Peak RssAnon above its value at the start while ``work()`` runs."""
    base = rss_anon()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = work()
    done.set()
    sampler.join()
    return max(peak[0], rss_anon()) - base, result


def main(scratch: str, group_bytes: int, directories: list[str]) -> None:
    weights = np.full(len(directories), 1.0 / len(directories))
    tiny = [os.path.join(scratch, f"tiny{i}") for i in range(len(directories))]
    for path in tiny:
        checkpoint.save_expert(path, {"w": np.ones((4, 4), np.float32)}, reward="r", base_model="tiny")
    checkpoint.interpolate_checkpoints(tiny, weights, os.path.join(scratch, "tiny-soup"))
    soup.interpolate(checkpoint.restore_experts(tiny)[0], weights)

    streamed, _ = peak_growth(
        lambda: checkpoint.interpolate_checkpoints(
            directories, weights, os.path.join(scratch, "streamed"), group_bytes=group_bytes
        )
    )
    loaded, merged = peak_growth(
        lambda: soup.interpolate(checkpoint.restore_experts(directories)[0], weights)
    )
    restored, _ = checkpoint.restore_expert(os.path.join(scratch, "streamed"))
    equal = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(sorted_leaves(restored), sorted_leaves(merged))
    )
    print(json.dumps({"streamed": streamed, "loaded": loaded, "equal": equal}), flush=True)


def sorted_leaves(tree: dict) -> list:
    return [tree[key] for key in sorted(tree)]


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
