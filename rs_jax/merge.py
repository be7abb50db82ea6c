"""Serve one preference: merge experts into a single checkpoint.

    python -m rs_jax.merge --experts runs/x/experts/risky runs/x/experts/cautious \\
        --weights 0.3 0.7 --out merged/

Experts are either rs_jax expert checkpoints (orbax + manifest; the output is
one too) or Hugging Face Flax model directories (the output is a
``save_pretrained`` directory loadable by transformers). ``--out`` must not
exist yet or be empty, must lie outside the experts, and must be writable:
nothing on disk is overwritten. Every error is one line (exit code 2); when it
comes from reading or writing checkpoints, the full report goes to a log file in
the system's temporary folder, named on that line.

rs_jax checkpoints too big to hold together in memory are streamed a few leaves
at a time (``--stream``; chosen automatically when the experts together exceed
half the available memory): the result is the same, bit for bit. A streamed
merge stages the soup in a hidden folder beside ``--out``; if it is killed, the
next merge into the same folder removes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

from rs_jax import checkpoint, failures, soup
from rs_jax.models import hf


def _format(weights: Sequence[float]) -> str:
    return ",".join(f"{w:g}" for w in weights)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def should_stream(experts: Sequence[str]) -> bool:
    """True when the experts' params together exceed half the available memory."""
    total = sum(checkpoint.read_layout(path).nbytes for path in experts)
    available = available_memory_bytes()
    return available is not None and 2 * total > available


def merge_orbax(
    experts: Sequence[str],
    weights: Sequence[float],
    out: str,
    allow_extrapolation: bool,
    stream: bool | None = None,
) -> str:
    """Interpolates rs_jax expert checkpoints into a new expert checkpoint at ``out``.

    ``stream`` (default: ``should_stream``) reads and combines a few leaves at a time
    (``checkpoint.interpolate_checkpoints``) instead of loading every expert.
    """
    if stream is None:
        stream = should_stream(experts)
    checkpoint.remove_stale_staging(os.path.dirname(os.path.abspath(out)))
    if stream:
        manifest = checkpoint.interpolate_checkpoints(
            experts,
            weights,
            out,
            allow_extrapolation=allow_extrapolation,
        )
        return f"orbax expert checkpoint ({manifest.param_count} params, streamed)"
    params, manifests = checkpoint.restore_experts(experts)
    merged = soup.interpolate(params, weights, allow_extrapolation=allow_extrapolation)
    rewards = [manifest.reward for manifest in manifests]
    checkpoint.save_expert(
        out,
        merged,
        reward=f"soup({_format(weights)} of {'+'.join(rewards)})",
        base_model=manifests[0].base_model,
        base_fingerprint=manifests[0].base_fingerprint,
        config={
            "experts": [os.path.abspath(path) for path in experts],
            "rewards": rewards,
            "weights": list(weights),
        },
    )
    return f"orbax expert checkpoint ({checkpoint.param_count(merged)} params)"


def merge_hf(experts: Sequence[str], weights: Sequence[float], out: str, allow_extrapolation: bool) -> str:
    """Interpolates Hugging Face Flax models of one architecture into ``out``."""
    loaded = [hf.load_flax_pretrained(path) for path in experts]
    models = [model for model, _ in loaded]
    architectures = {type(model).__name__ for model in models}
    if len(architectures) != 1:
        raise ValueError(f"Experts have different model classes {sorted(architectures)}.")
    merged = soup.interpolate(
        [params for _, params in loaded], weights, allow_extrapolation=allow_extrapolation
    )
    hf.save_flax_pretrained(models[0], merged, out)
    with open(os.path.join(out, "soup.json"), "w") as handle:
        json.dump(
            {"experts": [os.path.abspath(p) for p in experts], "weights": list(weights)}, handle, indent=2
        )
    return f"Hugging Face Flax model ({architectures.pop()})"


def check_inputs(
    experts: Sequence[str], weights: Sequence[float], out: str, allow_extrapolation: bool, stream: bool | None
) -> str:
    """Checks a merge before anything is read; returns the experts' kind, "hf" or "orbax".

    Raises:
      ValueError: bad λ, an expert that is not a directory, mixed kinds, ``--stream`` with
        HF directories, ``out`` existing and not empty, inside an expert or not writable.
    """
    if len(experts) < 2:
        raise ValueError(f"Give at least two experts; got {len(experts)}.")
    if len(weights) != len(experts):
        raise ValueError(f"Got {len(experts)} experts but {len(weights)} weights.")
    soup.check_weights(weights, len(experts), allow_extrapolation=allow_extrapolation)
    for path in experts:
        if not os.path.isdir(path):
            raise ValueError(f"Expert {path} is not a directory.")
    checkpoint.check_fresh_output(out, experts)
    failures.check_writable(out)
    kinds = {"hf" if hf.is_hf_directory(path) else "orbax" for path in experts}
    if len(kinds) != 1:
        raise ValueError("Mixing rs_jax checkpoints and Hugging Face directories is not supported.")
    if kinds == {"hf"} and stream:
        raise ValueError("--stream works on rs_jax expert checkpoints, not Hugging Face directories.")
    return kinds.pop()


def _run(
    kind: str,
    experts: Sequence[str],
    weights: Sequence[float],
    out: str,
    allow_extrapolation: bool,
    stream: bool | None,
) -> str:
    """Runs a checked merge; if it fails, removes what it wrote to ``out`` (absent or empty before)."""
    existed = os.path.isdir(out)
    try:
        if kind == "hf":
            return merge_hf(experts, weights, out, allow_extrapolation)
        return merge_orbax(experts, weights, out, allow_extrapolation, stream)
    except BaseException:
        if existed:
            for name in os.listdir(out):
                path = os.path.join(out, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise


def merge(
    experts: Sequence[str],
    weights: Sequence[float],
    out: str,
    *,
    allow_extrapolation: bool = False,
    stream: bool | None = None,
) -> str:
    """Merges experts (all rs_jax checkpoints or all HF directories) into ``out``; says what it wrote.

    ``stream``: for rs_jax checkpoints, True streams leaf groups, False loads every
    expert, None decides by size (``should_stream``).

    Raises:
      ValueError: what ``check_inputs`` refuses, or a problem with the experts (unreadable,
        corrupt leaf, another base model or frozen base, another architecture).
    """
    inputs = (experts, weights, out, allow_extrapolation, stream)
    return _run(check_inputs(*inputs), *inputs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rs_jax.merge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--experts", nargs="+", required=True, help="expert directories")
    parser.add_argument(
        "--weights", nargs="+", type=float, required=True, help="λ, one per expert, summing to 1"
    )
    parser.add_argument("--out", required=True, help="new output directory")
    parser.add_argument("--allow-extrapolation", action="store_true", help="permit λ outside [0, 1]")
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read a few leaves of every expert at a time (default: when they would not fit in memory)",
    )
    args = parser.parse_args(argv)
    log_path = os.path.join(tempfile.gettempdir(), f"rs_jax-merge-{os.getpid()}.log")
    inputs = (args.experts, args.weights, args.out, args.allow_extrapolation, args.stream)
    # SIGTERM unwinds like Ctrl-C while merging, so a streamed merge removes its staging folder.
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        kind = check_inputs(*inputs)
        with failures.quiet_failures(log_path):
            written = _run(kind, *inputs)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    print(f"wrote {written} to {args.out} (λ = {_format(args.weights)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
