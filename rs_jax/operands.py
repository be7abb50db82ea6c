"""Frozen arrays as operands of compiled programs, never as constants.

A jitted function that closes over arrays — a frozen base LM, a reward model's weights, a
prompt set — has them embedded in its program as constants: XLA copies them into the
executable (a 7B model is past protobuf's 2 GiB limit) and holds them twice in memory. rs_jax
instead keeps such arrays as pytree leaves of what it compiles — a learner registered as a
pytree dataclass, a ``jax.tree_util.Partial`` over an evaluation — and passes them to ``jit``
as arguments. ``split`` takes a pytree's arrays out (the operands) and leaves a hashable
``Skeleton`` (the tree structure and the other leaves, e.g. plain functions, which stay
static); ``Skeleton.merge`` puts (traced) arrays back; ``jit`` is ``jax.jit`` with the arrays of
the function itself as operands.

>>> import jax, jax.numpy as jnp
>>> weights = jnp.ones((512, 512))
>>> score = jax.tree_util.Partial(lambda w, x: (x @ w).sum(), weights)
>>> jit(score)(jnp.ones(512))  # ``weights`` is an argument of the compiled program
Array(262144., dtype=float32)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any


def is_array(leaf: Any) -> bool:
    """Whether a pytree leaf is an array that a compiled program takes as an operand."""
    return isinstance(leaf, jax.Array | np.ndarray)


@dataclasses.dataclass(frozen=True, eq=False)
class Skeleton:
    """A pytree with its arrays taken out.

    Two skeletons are equal when they have the same tree structure and the very same static
    leaves (compared by identity, so any object can be one), which makes a skeleton a cache key
    for the program compiled for it.

    Attributes:
      treedef: the structure of the original pytree.
      static_leaves: its leaves, with None where an array was.
    """

    treedef: jax.tree_util.PyTreeDef
    static_leaves: tuple[Any, ...]

    def _key(self) -> tuple[Any, ...]:
        return self.treedef, tuple(id(leaf) for leaf in self.static_leaves)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Skeleton) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def merge(self, arrays: Sequence[jax.Array]) -> PyTree:
        """The original pytree with ``arrays`` (e.g. tracers) in the places ``split`` took them from."""
        replacements = iter(arrays)
        leaves = [next(replacements) if leaf is None else leaf for leaf in self.static_leaves]
        return self.treedef.unflatten(leaves)


def split(tree: PyTree) -> tuple[list[jax.Array], Skeleton]:
    """The array leaves of ``tree`` (NumPy or JAX) and its ``Skeleton``.

    A leaf that is not an array — a plain function, a learner that is not a registered
    pytree, a Python number — stays in the skeleton; whatever it closes over stays a constant.
    """
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [leaf for leaf in leaves if is_array(leaf)]
    static_leaves = tuple(None if is_array(leaf) else leaf for leaf in leaves)
    return arrays, Skeleton(treedef, static_leaves)


@functools.lru_cache(maxsize=64)
def _compiled_call(skeleton: Skeleton) -> Callable[..., Any]:
    def call(arrays: list[jax.Array], *args: Any) -> Any:
        return skeleton.merge(arrays)(*args)

    return jax.jit(call)


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``jax.jit(fn)`` for a callable pytree, with the arrays it holds as operands.

    Args:
      fn: e.g. a ``jax.tree_util.Partial`` over a frozen model's params, or a learner's bound
        pieces; a plain function works too (it holds no arrays: same as ``jax.jit``).

    Returns:
      ``fn``'s jitted twin taking ``fn``'s own positional arguments. The compiled program is
      cached per skeleton, so jitting another ``Partial`` of the same function over new arrays
      of the same shapes does not recompile.
    """
    arrays, skeleton = split(fn)
    return functools.partial(_compiled_call(skeleton), arrays)
