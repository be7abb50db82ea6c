"""Peak memory of merging safetensors model directories, for tests/test_hf_merge.py.

    python tests/hf_merge_memory.py SCRATCH EXPERT_DIR...

Prints one JSON line: the peak growth of this process's anonymous resident memory
(RssAnon, sampled as in tests/stream_memory.py) while ``hf_merge.merge_models`` merges the
experts uniformly into SCRATCH/merged. A tiny merge with one tensor of the experts' first
shape runs first, so compilation is not counted.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file
from stream_memory import peak_growth

from rs_jax import hf_merge
from rs_jax import safetensors_io as st


def main(scratch: str, directories: list[str]) -> None:
    weights = [1.0 / len(directories)] * len(directories)
    spec = next(iter(st.read_layout(directories[0]).tensors.values()))
    tiny = []
    for index in range(len(directories)):
        tiny.append(os.path.join(scratch, f"tiny{index}"))
        os.makedirs(tiny[-1])
        with open(os.path.join(tiny[-1], "config.json"), "w") as handle:
            json.dump({}, handle)
        save_file({"w": np.zeros(spec.shape, spec.dtype)}, os.path.join(tiny[-1], st.MODEL_WEIGHTS))
    hf_merge.merge_models(tiny, weights, os.path.join(scratch, "tiny-merged"))
    merged, _ = peak_growth(
        lambda: hf_merge.merge_models(directories, weights, os.path.join(scratch, "merged"))
    )
    print(json.dumps({"merged": merged}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
