import json

import pytest

from configs import captioning, locomotion, text, vqa
from rs_jax import config as config_lib
from rs_jax import pipeline, run_identity, starting_points

CONFIG = text.get_config("smoke")


def identity(config=CONFIG, task="text", base=""):
    return run_identity.identify(task, config, base_fingerprint=base)


def test_a_fresh_or_empty_out_is_accepted_with_or_without_resume(tmp_path):
    for resume in (False, True):
        run_identity.check_run_dir(tmp_path / "new", identity(), resume=resume)
        run_identity.check_run_dir(tmp_path, identity(), resume=resume)


def test_resume_accepts_the_same_run_and_a_larger_budget(tmp_path):
    run_identity.write_identity(tmp_path, identity())
    run_identity.check_run_dir(tmp_path, identity(), resume=True)
    more = CONFIG.budget.finetune_updates + 2
    bigger = config_lib.override(CONFIG, [f"budget.finetune_updates={more}", "rs_points=5", "eval_prompts=3"])
    run_identity.check_run_dir(tmp_path, identity(bigger), resume=True)


def test_resume_may_score_a_locomotion_run_with_its_mean_or_sampled_actions(tmp_path):
    config = locomotion.get_config("smoke")
    run_identity.write_identity(tmp_path, run_identity.identify("locomotion", config))
    rescored = config_lib.override(config, [f"eval_deterministic={not config.eval_deterministic}"])
    run_identity.check_run_dir(tmp_path, run_identity.identify("locomotion", rescored), resume=True)


def test_an_existing_run_without_resume_is_refused(tmp_path):
    run_identity.write_identity(tmp_path, identity())
    with pytest.raises(ValueError, match=r"already holds a text run; pass --resume to continue it"):
        run_identity.check_run_dir(tmp_path, identity(), resume=False)


def test_resume_with_another_seed_or_base_names_every_difference(tmp_path):
    run_identity.write_identity(tmp_path, identity(base="ab" * 32))
    other = config_lib.override(CONFIG, ["seed=1", "budget.pretrain_learning_rate=1e10"])
    with pytest.raises(ValueError) as error:
        run_identity.check_run_dir(tmp_path, identity(other, base="cd" * 32), resume=True)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "base model fingerprint: abababababababab in the run, cdcdcdcdcdcdcdcd now" in message
    assert "seed: 0 in the run, 1 now" in message
    learning_rate = CONFIG.budget.pretrain_learning_rate
    assert f"budget.pretrain_learning_rate: {learning_rate!r} in the run, 10000000000.0 now" in message
    assert "finetune_updates" not in message


def test_a_run_of_another_task_is_refused_even_with_resume(tmp_path):
    run_identity.write_identity(tmp_path, identity(captioning.get_config("smoke"), task="captioning"))
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"holds a run of task 'captioning', not 'text'"):
            run_identity.check_run_dir(tmp_path, identity(), resume=resume)


def test_a_folder_of_unrelated_files_is_refused_and_left_alone(tmp_path):
    (tmp_path / "results.json").write_text('{"mine": 1}')
    (tmp_path / "summary.md").write_text("my notes")
    for resume in (False, True):
        with pytest.raises(
            ValueError, match=r"is not empty and holds no rs_jax run \(identity.json is missing\)"
        ):
            run_identity.check_run_dir(tmp_path, identity(), resume=resume)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "summary.md"]
    assert (tmp_path / "summary.md").read_text() == "my notes"


def test_a_file_or_a_garbled_identity_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a run directory"):
        run_identity.check_run_dir(tmp_path / "file", identity(), resume=False)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "identity.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"run/identity.json is not a run identity \(JSONDecodeError"):
        run_identity.check_run_dir(tmp_path / "run", identity(), resume=True)


def test_identity_json_records_the_weights_defining_fields():
    recorded = identity()
    assert "seed" in recorded.config and "ppo.kl_coef" in recorded.config
    assert "budget.finetune_learning_rate" in recorded.config
    budget = {"budget.finetune_updates", "budget.pretrain_updates", "budget.checkpoint_every", "rs_points"}
    assert not budget & set(recorded.config)
    assert json.loads(json.dumps(recorded.config)) == recorded.config
    assert run_identity.is_budget_field("budget.finetune_updates")
    assert not run_identity.is_budget_field("budget.finetune_learning_rate")
    assert run_identity.is_budget_field("eval.anything", frozenset({"eval"}))
    assert not run_identity.is_budget_field("ppo.clip")


def test_a_run_from_a_starting_point_records_its_hash_as_the_base(tmp_path):
    config = vqa.get_config("cpu")
    assert config.starting_point == starting_points.SHIPPED
    pipeline.start_run("vqa", str(tmp_path), config)
    manifest = starting_points.read_manifest(starting_points.resolve(config.starting_point, "vqa"))
    assert run_identity.read_identity(tmp_path).base_fingerprint == manifest["sha256"]
    in_run = config_lib.override(config, ["starting_point="])
    with pytest.raises(ValueError, match="base model fingerprint"):
        pipeline.start_run("vqa", str(tmp_path), in_run, resume=True)
