"""What a measurement records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from typing import Any

import jax


def usable_cores() -> int:
    """The cores this process may run on (``taskset`` narrows them), or the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """Backend, devices, cores (of the machine, and those this process may run on: ``taskset``),
    processor and jax version of the machine measured."""
    return {
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "cpu_count": os.cpu_count(),
        "cores_used": usable_cores(),
        "processor": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "load_average_1m_at_start": os.getloadavg()[0],  # other work on the machine skews times
    }
