"""Starting points: saved with their hash, loaded into a task's params tree, refused when altered."""

import dataclasses
import importlib
import json

import jax
import numpy as np
import pytest

from configs import diffusion as diffusion_config
from rs_jax import config as config_lib
from rs_jax import pipeline, starting_points
from tasks import diffusion
from tasks import starting_points as build_cli

PARAMS = {
    "encoder": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)},
    "head": [np.ones(4, np.float32)],
}
RECORD = {"task": "grounding", "rebuild": "python -m tasks.starting_points build grounding --out DIR"}


def test_saved_params_come_back_in_the_tree_of_the_model(tmp_path):
    saved = starting_points.save(str(tmp_path), PARAMS, RECORD)
    assert saved["param_count"] == 10 and saved["bytes"] == (tmp_path / "params.safetensors").stat().st_size
    like = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), PARAMS)
    loaded, manifest = starting_points.load(str(tmp_path), like, "grounding")
    assert manifest == saved
    assert jax.tree.structure(loaded) == jax.tree.structure(PARAMS)
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(PARAMS)):
        np.testing.assert_array_equal(got, want)


def test_shipped_names_the_package_directory_of_the_task():
    assert starting_points.resolve("shipped", "vqa") == str(starting_points.SHIPPED_ROOT / "vqa")
    assert starting_points.resolve("/some/dir", "vqa") == "/some/dir"


def test_cosine_pretraining_warms_up_then_decays_to_zero():
    budget = config_lib.BudgetConfig(
        pretrain_updates=100, finetune_updates=1, pretrain_learning_rate=1e-3, finetune_learning_rate=1e-4
    )
    assert pipeline.pretrain_step_size(budget) == 1e-3
    schedule = pipeline.pretrain_step_size(
        dataclasses.replace(budget, pretrain_cosine=True, pretrain_num_minibatches=4)
    )
    steps = np.asarray([schedule(step) for step in (0, 4, 8, 200, 400)])  # 400 optimizer steps
    np.testing.assert_allclose(steps[[0, 2, 4]], [0.0, 1e-3, 0.0], atol=1e-9)
    assert 0 < steps[1] < steps[2] and steps[3] < steps[2]


def test_an_altered_or_missing_file_is_named_with_the_command_that_rebuilds_it(tmp_path):
    starting_points.save(str(tmp_path), PARAMS, RECORD)
    path = tmp_path / "params.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"params.safetensors does not match .*SHA-256.*build grounding"):
        starting_points.verify(str(tmp_path))
    path.unlink()
    with pytest.raises(ValueError, match=r"params.safetensors is missing; rebuild it with: python -m tasks"):
        starting_points.verify(str(tmp_path))
    with pytest.raises(ValueError, match=r"no manifest\.json"):
        starting_points.verify(str(tmp_path / "elsewhere"))


def test_another_task_or_another_model_shape_is_refused(tmp_path):
    starting_points.save(str(tmp_path), PARAMS, RECORD)
    like = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), PARAMS)
    with pytest.raises(ValueError, match="is 'grounding''s, not 'vqa''s"):
        starting_points.load(str(tmp_path), like, "vqa")
    wider = {**like, "encoder": {"kernel": jax.ShapeDtypeStruct((2, 4), np.float32)}}
    with pytest.raises(ValueError, match=r"leaf encoder/kernel is float32\[2, 3\], this config's model has"):
        starting_points.load(str(tmp_path), wider, "grounding")
    renamed = {"encoder": like["encoder"], "output": like["head"]}
    with pytest.raises(ValueError, match="does not fit this config's model"):
        starting_points.load(str(tmp_path), renamed, "grounding")


@pytest.mark.third_party
@pytest.mark.usefixtures("fast_compile")
def test_a_built_starting_point_replaces_the_pre_training_of_the_task(tmp_path, capsys):
    from configs import grounding as grounding_config
    from tasks import grounding

    out = tmp_path / "start"
    build_cli.main(["build", "grounding", "--out", str(out), "--preset", "smoke"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert printed["sha256"] == manifest["sha256"] and set(manifest["quality"]) == {
        "small",
        "medium",
        "large",
    }
    assert (
        manifest["rebuild"] == f"python -m tasks.starting_points build grounding --out {out} --preset smoke"
    )

    assert not (out / "pretrain-run").exists()  # the checkpoints go once the params are saved

    config = grounding_config.get_config("smoke")
    pretrained, _ = pipeline.pretrain(str(out / "pretrain-run"), grounding.build(config), resume=True)
    started = config_lib.override(config, [f"starting_point={out}"])
    task = grounding.build(started)
    assert isinstance(task.pretraining, pipeline.Pretrained)
    assert task.pretraining.starting_point == {"directory": str(out), **manifest}
    report = pipeline.starting_point_report(task.pretraining.starting_point)
    assert report.results["starting_point"]["sha256"] == manifest["sha256"]
    assert "preset smoke, 2 pre-training updates, seed 0" in report.sections[0]
    for got, want in zip(jax.tree.leaves(task.pretraining.params), jax.tree.leaves(pretrained)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    build_cli.main(["rescore", str(out)])  # the same recipe measures the same quality
    rescored = json.loads((out / "manifest.json").read_text())
    assert rescored == manifest

    (out / "params.safetensors").write_bytes(b"not the file")
    with pytest.raises(SystemExit) as exit_info:
        build_cli.main(["verify", str(out)])
    assert exit_info.value.code == 2
    assert "does not match its manifest" in capsys.readouterr().err


@pytest.mark.third_party
@pytest.mark.parametrize(
    "task_name", sorted(set(build_cli.TASKS) & {path.name for path in starting_points.SHIPPED_ROOT.iterdir()})
)
def test_a_shipped_starting_point_verifies_and_fits_its_recipe_s_model(task_name):
    configs = importlib.import_module(f"configs.{task_name}")
    manifest = starting_points.verify(starting_points.resolve(starting_points.SHIPPED, task_name))
    recipe = config_lib.override(configs.get_config(manifest["preset"]), manifest["overrides"])
    assert manifest["preset"] == "pretrain" and manifest["task"] == task_name
    assert manifest["pretrain_updates"] == recipe.budget.pretrain_updates and recipe.budget.pretrain_cosine
    cpu = configs.get_config("cpu")
    # the CPU preset where it starts from the shipped weights, else the recipe fine-tuned from them
    started = cpu if cpu.starting_point == starting_points.SHIPPED else recipe
    started = dataclasses.replace(started, starting_point=starting_points.SHIPPED)
    task = importlib.import_module(f"tasks.{task_name}").build(started)
    assert task.pretraining.starting_point["sha256"] == manifest["sha256"]


def test_the_cpu_presets_that_start_from_shipped_weights_have_them():
    starts = {
        name: importlib.import_module(f"configs.{name}").get_config("cpu").starting_point
        for name in build_cli.TASKS
    }
    shipped = {name for name, start in starts.items() if start == starting_points.SHIPPED}
    assert shipped and shipped <= {path.name for path in starting_points.SHIPPED_ROOT.iterdir()}


@pytest.mark.third_party
def test_a_diffusion_starting_point_loads_into_the_task_and_reports_the_objects_drawn_right(tmp_path):
    out = tmp_path / "start"
    build_cli.main(["build", "diffusion", "--out", str(out), "--preset", "smoke"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"objects_found", "detections_right", "frechet_distance"} <= set(manifest["quality"])
    assert manifest["quality"]["frechet_distance"]["stderr"] is None
    config = config_lib.override(diffusion_config.get_config("smoke"), [f"starting_point={out}"])
    pretraining = diffusion.build(config).pretraining
    assert isinstance(pretraining, pipeline.Pretrained)
    assert "frechet_distance " in pipeline.starting_point_report(pretraining.starting_point).sections[0]
