"""benchmarks/gpu/run.py --dry-run: the GPU lease's script, on CPU at tiny sizes, so that it cannot rot."""

import importlib.util
import json
import pathlib

import pytest

RUN = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "run.py"


@pytest.mark.third_party  # brax physics and transformers' LLaMA
@pytest.mark.usefixtures("fast_compile")
def test_dry_run_measures_every_part(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_run", RUN)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    out = tmp_path / "gpu.json"
    run.main(["--dry-run", "--no-install", "--out", str(out)])
    result = json.loads(out.read_text())
    for part in run.PARTS:
        assert isinstance(result[part], dict), f"{part}: {result[part]}"  # a failed part is a message
    assert result["ppo"]["env_steps_per_s"] > 0
    assert result["multi_run"]["runs"] == 3  # the smoke preset's μ = 0, 0.5, 1
    assert result["sweep"]["points"] == 3 and result["sweep"]["sweep_over_floor"] > 0
    assert result["lora_ppo"]["response_tokens_per_s"] > 0
    assert result["versions"]["jax"]
