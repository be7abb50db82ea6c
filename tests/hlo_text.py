"""Reading lowered programs in tests: which arrays XLA got as constants."""

import re

import numpy as np


def embedded_constant_sizes(hlo_text: str) -> list[int]:
    """Element counts of the non-splat constants (literal lists or hex blobs) in StableHLO text."""
    shapes = re.findall(r'stablehlo\.constant dense<[\["][^>]*>\s*:\s*tensor<((?:\d+x)+)\w+>', hlo_text)
    return [int(np.prod([int(size) for size in shape.rstrip("x").split("x")])) for shape in shapes]
