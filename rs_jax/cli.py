"""The command line every task shares: ``--preset``, ``--out``, ``--set key=value …``, ``--resume``.

A task module declares its config module and ``build(config) -> pipeline.Task`` and calls
``run_task`` from its ``main``; ``rs_jax.pipeline.run`` does the rest. A bad override is a usage
error (exit 2), a refused run (an existing run directory, an unsupported option, a diverged
update) is one line on stderr with exit 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from rs_jax import config as config_lib
from rs_jax import distributed, pipeline
from rs_jax.train import trainer


def run_task(
    argv: Sequence[str] | None,
    *,
    name: str,
    description: str | None,
    configs: ModuleType,
    build: Callable[[Any], pipeline.Task],
) -> dict[str, Any]:
    """Parses the task's command line, runs it, prints its summary.md and returns the summary.

    Args:
      argv: the arguments (None: ``sys.argv[1:]``).
      name: the task's name: ``python -m tasks.<name>``, default ``--out runs/<name>``.
      description: the task's module docstring.
      configs: the task's config module (``PRESETS`` and ``get_config(preset)``).
      build: ``build(config) -> pipeline.Task``.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m tasks.{name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="cpu", choices=configs.PRESETS)
    parser.add_argument("--out", default=f"runs/{name}", help="run directory")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    parser.add_argument(
        "--shard",
        action="store_true",
        help="split the runs over every visible device (mesh axis 'expert'), batches over 'data' and "
        "the evaluated points over both; on a CPU machine each core is a device",
    )
    args = parser.parse_args(argv)
    if args.shard:
        distributed.cpu_device_per_core()
    distributed.initialize()  # a no-op unless a multi-host run is configured (README "Scaling out")
    try:
        config = config_lib.override(configs.get_config(args.preset), args.set)
        config_lib.validate(config)
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = pipeline.run(build(config), args.out, config=config, resume=args.resume, shard=args.shard)
    except (ValueError, trainer.DivergenceError) as error:
        parser.exit(2, f"error: {error}\n")
    with open(os.path.join(args.out, "summary.md")) as handle:
        print(handle.read())
    return summary
