"""What every benchmark records beside its numbers."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def machine_info() -> dict[str, Any]:
    """Backend, devices, cores, processor and jax version of the machine measured."""
    return {
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "load_average_1m_at_start": os.getloadavg()[0],  # other work on the machine skews times
    }


def write_result(path: str, result: dict[str, Any]) -> None:
    """Writes a benchmark's JSON (creating its folder) and says where."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {path}")


def median_seconds_and_result(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(median wall time of ``fn()`` (results blocked on) over ``repeats`` runs after one warm-up,
    the last result)."""
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up."""
    return median_seconds_and_result(fn, repeats)[0]
