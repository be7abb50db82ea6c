"""A tiny training run for the fault tests: noisy regression towards the reward weights, ``trainer.fit``.

    python tests/resumable_run.py --run-dir DIR --updates 6 [--resume] [--hang-at K] [--ballast-mb MB]

Every update prints ``update K started`` from inside the jitted update (an
``io_callback``); ``--hang-at K`` then blocks update K forever, so a test can
kill the process mid-update. The carry holds ``--ballast-mb`` of random floats
so that each checkpoint takes long enough to be killed mid-write. Each update
draws fresh noise from its key, so a resumed run only matches an uninterrupted
one if the keys, optimizer state and params all survive. At the end the final
params go to ``DIR/final.npz`` and ``done`` is printed. Errors exit with code 2
and one ``error:`` line, like the project's CLIs.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import io_callback

from rs_jax.train import trainer


class HookedLearner:
    """Fits w (3,) to reward_weights[0] + noise; its carry counts updates and holds ballast."""

    def __init__(self, hang_at: int) -> None:
        self.hang_at = hang_at

    def _started(self, count: np.ndarray) -> None:
        print(f"update {int(count)} started", flush=True)
        if int(count) == self.hang_at:
            time.sleep(3600)

    def collect(self, params, carry, reward_weights, key):
        count = carry["count"] + 1
        io_callback(self._started, None, count, ordered=True)
        targets = reward_weights[0] + jax.random.normal(key, (8, 3))
        reward = -jnp.mean(jnp.square(params["w"][None, :] - targets))
        return {"targets": targets}, {"count": count, "ballast": carry["ballast"]}, {"reward": reward}

    def loss(self, params, minibatch, key):
        noise = 0.01 * jax.random.normal(key, minibatch["targets"].shape)
        return jnp.mean(jnp.square(params["w"][None, :] - minibatch["targets"] + noise)), {}


OPTIMIZER = optax.adam(0.1)


@functools.lru_cache(maxsize=4)
def make_update(hang_at: int = 0):
    """One update function per hang point, so repeated in-process runs reuse its compilation."""
    return trainer.make_update(HookedLearner(hang_at), OPTIMIZER, num_epochs=1, num_minibatches=1)


def train(
    run_dir: str | None, updates: int, *, resume: bool = False, hang_at: int = 0, ballast_mb: int = 0
) -> trainer.TrainState:
    """Trains for ``updates`` updates, checkpointing every update into ``run_dir``."""
    ballast = jax.random.normal(jax.random.PRNGKey(1), (max(1, ballast_mb * 2**18),))
    carry = {"count": jnp.zeros((), jnp.int32), "ballast": ballast}
    # Committed to one device like a restored state, so in-process runs with and without resume share
    # one compilation.
    state = jax.device_put(
        trainer.init_state({"w": jnp.zeros(3)}, OPTIMIZER, carry, seed=0), jax.devices()[0]
    )
    state, _ = trainer.fit(
        make_update(hang_at),
        state,
        jnp.array([0.5, 0.5]),
        updates,
        run_dir=run_dir,
        checkpoint_every=1,
        resume=resume,
    )
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hang-at", type=int, default=0)
    parser.add_argument("--ballast-mb", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        state = train(
            args.run_dir, args.updates, resume=args.resume, hang_at=args.hang_at, ballast_mb=args.ballast_mb
        )
    except (ValueError, trainer.NonFiniteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    np.savez(os.path.join(args.run_dir, "final.npz"), w=np.asarray(state.params["w"]))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
