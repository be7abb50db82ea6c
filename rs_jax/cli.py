"""The command line every task shares: ``--preset``, ``--out``, ``--set key=value …``, ``--resume``.

A task module declares its config module and a ``run(run_dir, config, *, resume, shard)`` and calls
``run_task`` from its ``main``; a bad override is a usage error (exit 2), a refused run (an
existing run directory, an unsupported option, a diverged update) is one line on stderr
with exit 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from rs_jax import config as config_lib
from rs_jax import distributed
from rs_jax.train import trainer


def run_task(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str | None,
    configs: ModuleType,
    run: Callable[..., dict[str, Any]],
    default_out: str,
) -> dict[str, Any]:
    """Parses the task's command line, runs it, prints its summary.md and returns the summary.

    Args:
      argv: the arguments (None: ``sys.argv[1:]``).
      prog: e.g. ``python -m tasks.captioning``.
      description: the task's module docstring.
      configs: the task's config module (``PRESETS`` and ``get_config(preset)``).
      run: ``run(run_dir, config, *, resume, shard) -> summary``.
      default_out: the run directory when ``--out`` is not given.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="cpu", choices=configs.PRESETS)
    parser.add_argument("--out", default=default_out, help="run directory")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    parser.add_argument(
        "--shard",
        action="store_true",
        help="split the runs over every visible device (mesh axis 'expert') and batches over 'data'",
    )
    args = parser.parse_args(argv)
    distributed.initialize()  # a no-op unless a multi-host run is configured (README "Scaling out")
    try:
        config = config_lib.override(configs.get_config(args.preset), args.set)
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = run(args.out, config, resume=args.resume, shard=args.shard)
    except (ValueError, trainer.DivergenceError) as error:
        parser.exit(2, f"error: {error}\n")
    with open(os.path.join(args.out, "summary.md")) as handle:
        print(handle.read())
    return summary
