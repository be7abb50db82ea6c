#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with the CPython 3.12 manylinux x86_64 wheels of wheels.txt, for
# benchmarks/gpu/run.py on the GPU machine (no network there; a call carries at most 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl -r benchmarks/gpu/wheels.txt
du -ch .whl/*.whl | tail -n 1
