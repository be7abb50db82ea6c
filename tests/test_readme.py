"""The README's result blocks are those generated from benchmarks/results/tasks/*.json."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_module():
    spec = importlib.util.spec_from_file_location("readme", os.path.join(ROOT, "benchmarks", "readme.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_result_blocks_match_the_reference_runs():
    readme = _readme_module()
    with open(readme.README) as handle:
        current = handle.read()
    tasks = sorted(
        name.removesuffix(".json") for name in os.listdir(readme.RESULTS_DIR) if name.endswith(".json")
    )
    for task in tasks:
        if "-" not in task:  # the reference of each task (not its other seeds) has a block
            assert f"<!-- results:{task} -->" in current, f"README has no results block for {task}"
    assert readme.render(current) == current, "README is stale: run python benchmarks/readme.py"


def test_a_block_is_regenerated_from_its_file():
    readme = _readme_module()
    stale = "<!-- results:text -->\nold numbers\n<!-- /results:text -->"
    rendered = readme.render(stale)
    assert "old numbers" not in rendered and "| pre-trained init |" in rendered


def test_other_seeds_of_a_task_add_a_spread_table(tmp_path, monkeypatch):
    import json
    import shutil

    readme = _readme_module()
    shutil.copy(os.path.join(readme.RESULTS_DIR, "text.json"), tmp_path / "text.json")
    other = json.loads((tmp_path / "text.json").read_text())
    other["config"]["seed"] = 7
    (tmp_path / "text-seed7.json").write_text(json.dumps(other))
    monkeypatch.setattr(readme, "RESULTS_DIR", str(tmp_path))
    rendered = readme.render("<!-- results:text -->\n<!-- /results:text -->")
    assert "| seed | expert positive on positive |" in rendered
    assert "\n| 0 |" in rendered and "\n| 7 |" in rendered


def test_every_variants_file_has_its_block_in_the_readme():
    readme = _readme_module()
    with open(readme.README) as handle:
        current = handle.read()
    for task, (path, _) in readme.VARIANT_BLOCKS.items():
        if os.path.exists(path):
            assert f"<!-- variants:{task} -->" in current, f"README has no variants block for {task}"


def test_a_sharded_run_of_a_task_adds_a_row_with_its_phases(tmp_path, monkeypatch):
    import json
    import shutil

    readme = _readme_module()
    shutil.copy(os.path.join(readme.RESULTS_DIR, "locomotion.json"), tmp_path / "locomotion.json")
    sharded = json.loads((tmp_path / "locomotion.json").read_text())
    sharded["reference_run"]["command"] += " --shard"
    sharded["reference_run"]["timing"] = {
        "pretrain_seconds": 61.2,
        "finetune_seconds": 240.0,
        "evaluate_seconds": 300.4,
    }
    (tmp_path / "locomotion-shard.json").write_text(json.dumps(sharded))
    monkeypatch.setattr(readme, "RESULTS_DIR", str(tmp_path))
    rendered = readme.render("<!-- results:locomotion -->\n<!-- /results:locomotion -->")
    assert "| `python -m tasks.locomotion --shard` |" in rendered and "| 61 / 240 / 300 |" in rendered
