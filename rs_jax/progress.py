"""Progress bars that a compiled program advances while it runs.

A program compiled once cannot hold a Python object such as a tqdm bar: the bar differs from
one call to the next and would be baked into the program (one compile per call). Instead the
host keeps its open bars in a table, the program takes a bar's index as an int32 operand, and
``tick`` (traced inside the program) calls back to the host with that index and the point's
value through an ordered ``jax.debug.callback``; the callback depends on the value, so it runs
once the point is computed. The table holds only the bars of the calls in progress.

>>> import jax, jax.numpy as jnp
>>> step = jax.jit(lambda x, bar: tick(bar, jnp.sin(x)))
>>> with bar("points", total=2) as bar_id:
...     for x in (0.0, 1.0):
...         _ = step(jnp.float32(x), bar_id)
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import jax
import numpy as np
from tqdm.auto import tqdm

_OPEN_BARS: dict[int, tqdm] = {}
_NEXT_ID = itertools.count()


@contextlib.contextmanager
def bar(description: str, total: int) -> Iterator[np.ndarray]:
    """Opens a tqdm bar of ``total`` steps; yields its index (an int32 scalar) for ``tick``.

    The bar shows an ETA and, after each tick, the last value ticked.
    """
    bar_id = next(_NEXT_ID) % np.iinfo(np.int32).max
    _OPEN_BARS[bar_id] = tqdm(total=total, desc=description, dynamic_ncols=True)
    try:
        yield np.int32(bar_id)
    finally:
        _OPEN_BARS.pop(bar_id).close()


MAX_SHOWN = 4  # columns of a ticked value shown on the bar


def summary(value: np.ndarray) -> str:
    """A short text of a ticked value: per-sample rows (..., C) averaged to their C column means,
    at most ``MAX_SHOWN`` of them."""
    array = np.asarray(value, np.float64)
    means = array.reshape(-1, array.shape[-1]).mean(axis=0) if array.ndim > 1 else array.reshape(-1)
    shown = np.array2string(means[:MAX_SHOWN], precision=3, separator=" ")
    return shown[:-1] + " …]" if means.size > MAX_SHOWN else shown


def advance(bar_id: np.ndarray | int, value: np.ndarray, steps: int = 1) -> None:
    """Host side: moves bar ``bar_id`` by ``steps`` and shows ``value``'s summary (a no-op once
    it is closed)."""
    progress = _OPEN_BARS.get(int(bar_id))
    if progress is None:
        return
    progress.set_postfix_str(summary(value), refresh=False)
    progress.update(steps)


def tick(bar_id: jax.Array, value: jax.Array) -> jax.Array:
    """Traced side: advances bar ``bar_id`` by one once ``value`` is computed; returns ``value``.

    Under ``vmap`` (and ``lax.map`` with a ``batch_size``) it ticks once per element, when the
    whole batch is done.
    """
    jax.debug.callback(advance, bar_id, value, ordered=True)
    return value
