"""What a measurement records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from typing import Any

import jax


def usable_cores() -> int:
    """The cores this process may run on (``taskset`` narrows them), or the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's name, family and model, and whether it has AVX-512, from ``/proc/cpuinfo``
    (``platform.processor()`` elsewhere). XLA:CPU compiles for the machine's vector ISA, which is
    why the same seed gives other numbers on another CPU type."""
    try:
        with open("/proc/cpuinfo") as handle:
            first_cpu = handle.read().split("\n\n")[0]
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(
        (key.strip(), value.strip())
        for key, value in (line.split(":", 1) for line in first_cpu.splitlines() if ":" in line)
    )
    vector = "AVX-512" if "avx512f" in fields.get("flags", "").split() else "no AVX-512"
    name, family, model = (fields.get(key, "?") for key in ("model name", "cpu family", "model"))
    return f"{name} (family {family} model {model}, {vector})"


def machine_info() -> dict[str, Any]:
    """Backend, devices, cores (of the machine, and those this process may run on: ``taskset``),
    processor, CPU model and jax version of the machine measured."""
    return {
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "cpu_count": os.cpu_count(),
        "cores_used": usable_cores(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "jax": jax.__version__,
        "load_average_1m_at_start": os.getloadavg()[0],  # other work on the machine skews times
    }
