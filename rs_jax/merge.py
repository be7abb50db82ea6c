"""Serve one preference: merge experts into a single checkpoint.

    python -m rs_jax.merge --experts runs/x/experts/risky runs/x/experts/cautious \\
        --weights 0.3 0.7 --out merged/

Experts are either rs_jax expert checkpoints (orbax + manifest; the output is
one too) or Hugging Face Flax model directories (the output is a
``save_pretrained`` directory loadable by transformers). ``--out`` must not
exist yet or be empty, must lie outside the experts, and must be writable:
nothing on disk is overwritten. Every error is one line (exit code 2) ending with
the path of a log in the system's temporary folder that holds the full report
(traceback, orbax's log records); a merge that fails removes what it wrote.

rs_jax checkpoints too big to hold together in memory are streamed a few leaves
at a time (``--stream``; chosen automatically when the experts together exceed
half the available memory): the result is the same, bit for bit. A streamed
merge stages the soup in a hidden folder beside ``--out``; if it is killed, the
next merge into the same folder removes it.

Hugging Face directories in PyTorch format (``config.json`` + ``model.safetensors``, or
shards with ``model.safetensors.index.json``) are merged tensor by tensor in bounded
memory (``rs_jax.hf_merge``); the output has the same tensor names and shards, in the
experts' dtypes (or ``--dtype``), with the config and tokenizer files, so transformers or
vLLM load it. ``--method`` picks a rule of ``rs_jax.merge_rules`` (``--base`` is the
pre-trained model for the rules on task vectors)::

    python -m rs_jax.merge --experts helpful/ harmless/ --weights 0.3 0.7 --out merged/
    python -m rs_jax.merge --method task_arithmetic --base llama/ --experts a/ b/ \\
        --weights 0.5 0.5 --scale 1.2 --dtype bfloat16 --out merged/
    python -m rs_jax.merge --method dare --base llama/ --experts a/ b/ --weights 0.5 0.5 \\
        --drop-probability 0.9 --seed 0 --out merged/

PEFT LoRA adapters (``adapter_config.json`` + ``adapter_model.safetensors``) of one base
merge exactly, ΔW = Σᵢ λᵢ·sᵢ·BᵢAᵢ (``rs_jax.peft_merge``): into ``--base`` (a full model)
or, without ``--base``, as one PEFT adapter of rank Σrᵢ; ``--lora-mode factors``
averages A and B instead::

    python -m rs_jax.merge --experts lora_helpful/ lora_harmless/ --weights 0.3 0.7 \\
        --base llama/ --out merged/
    python -m rs_jax.merge --experts lora_helpful/ lora_harmless/ --weights 0.3 0.7 --out soup_adapter/

The same merge from a file (``rs_jax.merge_config`` lists its fields)::

    python -m rs_jax.merge --config merge.yml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence

from rs_jax import checkpoint, failures, hf_merge, merge_config, merge_rules, peft_merge, soup
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


def merge_safetensors(
    experts: Sequence[str],
    weights: Sequence[float],
    out: str,
    allow_extrapolation: bool,
    rule: hf_merge.RuleOptions | None,
    base: str | None,
    dtype: str | None,
    lora_mode: peft_merge.LoraMode,
) -> str:
    """Merges HF safetensors model directories (``hf_merge``) or PEFT adapters (``peft_merge``)."""
    checkpoint.check_fresh_output(out)
    rule = rule or hf_merge.RuleOptions()
    if all(peft_merge.is_peft_adapter(path) for path in experts):
        if (rule.density, rule.drop_probability) != (None, None):
            raise ValueError("PEFT adapters take no --density or --drop-probability.")
        return peft_merge.merge_adapters(
            experts,
            weights,
            out,
            base=base,
            mode=lora_mode,
            method=rule.method,
            scale=rule.scale,
            dtype=dtype,
            allow_extrapolation=allow_extrapolation,
        )
    if all(hf_merge.is_safetensors_model(path) for path in experts):
        if lora_mode != "delta":
            raise ValueError("--lora-mode applies to PEFT adapters.")
        return hf_merge.merge_models(
            experts, weights, out, rule=rule, base=base, dtype=dtype, allow_extrapolation=allow_extrapolation
        )
    raise ValueError(
        "Give experts of one kind: all Hugging Face safetensors model directories or all PEFT adapters; "
        f"got {', '.join(experts)}."
    )


def merge(
    experts: Sequence[str],
    weights: Sequence[float],
    out: str,
    *,
    allow_extrapolation: bool = False,
    stream: bool | None = None,
    rule: hf_merge.RuleOptions | None = None,
    base: str | None = None,
    dtype: str | None = None,
    lora_mode: peft_merge.LoraMode = "delta",
) -> str:
    """Merges experts (all rs_jax checkpoints, all HF directories or all PEFT adapters) into
    ``out``; says what it wrote.

    ``stream``: for rs_jax checkpoints, True streams leaf groups, False loads every
    expert, None decides by size (``should_stream``). ``rule``, ``base``, ``dtype`` and
    ``lora_mode`` apply to safetensors directories and PEFT adapters (``merge_safetensors``).

    Raises:
      ValueError: bad λ or options; ``out`` existing and not empty, inside an expert or not
        writable (checked before any expert is read); a problem with the experts.
    """
    if len(experts) < 2:
        raise ValueError(f"Give at least two experts; got {len(experts)}.")
    if len(weights) != len(experts):
        raise ValueError(f"Got {len(experts)} experts but {len(weights)} weights.")
    checkpoint.check_fresh_output(out, experts)
    failures.check_writable(out)
    if any(hf_merge.is_safetensors_model(path) or peft_merge.is_peft_adapter(path) for path in experts):
        if stream is False:
            raise ValueError("Safetensors directories and PEFT adapters are always merged tensor by tensor.")
        return merge_safetensors(experts, weights, out, allow_extrapolation, rule, base, dtype, lora_mode)
    if (rule or hf_merge.RuleOptions()) != hf_merge.RuleOptions() or base or dtype or lora_mode != "delta":
        raise ValueError(
            "--method, --base, --dtype and --lora-mode apply to safetensors directories and PEFT adapters; "
            "rs_jax checkpoints and Flax directories merge linearly."
        )
    soup.check_weights(weights, len(experts), allow_extrapolation=allow_extrapolation)
    for path in experts:
        if not os.path.isdir(path):
            raise ValueError(f"Expert {path} is not a directory.")
    kinds = {"hf" if hf.is_hf_directory(path) else "orbax" for path in experts}
    if len(kinds) != 1:
        raise ValueError("Mixing rs_jax checkpoints and Hugging Face directories is not supported.")
    if kinds == {"hf"}:
        if stream:
            raise ValueError("--stream works on rs_jax expert checkpoints, not Hugging Face directories.")
        return merge_hf(experts, weights, out, allow_extrapolation)
    return merge_orbax(experts, weights, out, allow_extrapolation, stream)


@contextlib.contextmanager
def _removed_on_failure(out: str) -> Iterator[None]:
    """If the block raises, removes what it wrote to ``out``: ``out`` itself if it was absent, its
    contents if it was an empty folder; anything else (a refused, non-empty ``out``) is left alone."""
    was_empty = os.path.isdir(out) and not os.listdir(out)
    was_absent = not os.path.lexists(out)
    try:
        yield
    except BaseException:
        if was_absent and os.path.isdir(out):
            shutil.rmtree(out, ignore_errors=True)
        elif was_empty:
            for name in os.listdir(out):
                path = os.path.join(out, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rs_jax.merge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="a merge file (YAML or JSON) instead of the flags below")
    parser.add_argument("--experts", nargs="+", help="expert directories")
    parser.add_argument(
        "--weights", nargs="+", type=float, help="λ, one per expert (summing to 1 for linear and slerp)"
    )
    parser.add_argument("--out", help="new output directory")
    parser.add_argument("--allow-extrapolation", action="store_true", help="permit λ outside [0, 1]")
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read a few leaves of every expert at a time (default: when they would not fit in memory)",
    )
    parser.add_argument(
        "--method", default="linear", help=f"merge rule, one of {', '.join(sorted(merge_rules.RULES))}"
    )
    parser.add_argument("--base", help="pre-trained model directory (task-vector rules; PEFT merge target)")
    parser.add_argument("--density", type=float, help="fraction of each task vector kept (ties)")
    parser.add_argument("--drop-probability", type=float, help="task-vector entries dropped (dare)")
    parser.add_argument("--scale", type=float, help="factor on the merged task vector")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dare masks")
    parser.add_argument("--dtype", choices=sorted(hf_merge.OUTPUT_DTYPES), help="dtype of floating tensors")
    parser.add_argument(
        "--lora-mode", choices=("delta", "factors"), default="delta", help="how PEFT adapters combine"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    log_path = os.path.join(tempfile.gettempdir(), f"rs_jax-merge-{os.getpid()}.log")
    # SIGTERM unwinds like Ctrl-C while merging, so a streamed merge removes its staging folder.
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.config:
            if len(argv) != 2:
                raise ValueError("--config replaces the other flags; put everything in the file.")
            args = parser.parse_args(merge_config.to_argv(args.config))
        if not (args.experts and args.weights and args.out):
            parser.error("give --experts, --weights and --out, or --config")
        with failures.quiet_failures(log_path), _removed_on_failure(args.out):
            written = merge(
                args.experts,
                args.weights,
                args.out,
                allow_extrapolation=args.allow_extrapolation,
                stream=args.stream,
                rule=hf_merge.RuleOptions(
                    method=args.method,
                    density=args.density,
                    drop_probability=args.drop_probability,
                    scale=args.scale,
                    seed=args.seed,
                ),
                base=args.base,
                dtype=args.dtype,
                lora_mode=args.lora_mode,
            )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    print(f"wrote {written} to {args.out} (λ = {_format(args.weights)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
