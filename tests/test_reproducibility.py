"""benchmarks/reproducibility.py's comparison of two runs' outputs."""

import importlib.util
import pathlib

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_differences_name_every_changed_value_and_skip_wall_seconds(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports benchmarks/common.py
    spec = importlib.util.spec_from_file_location("reproducibility", BENCHMARKS / "reproducibility.py")
    reproducibility = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproducibility)
    a = {"rs": [{"mean": 1.0}, {"mean": 2.0}], "samples": ["a b"], "evaluation_cost": {"wall_seconds": 3.0}}
    b = {"rs": [{"mean": 1.0}, {"mean": 2.5}], "samples": ["a c"], "evaluation_cost": {"wall_seconds": 4.0}}
    assert reproducibility.differences(a, a) == []
    assert reproducibility.differences(a, {**b, "new": 1}) == [
        {"path": "/new", "a": None, "b": 1},
        {"path": "/rs[1]/mean", "a": 2.0, "b": 2.5},
        {"path": "/samples[0]", "a": "a b", "b": "a c"},
    ]
    assert reproducibility.differences([1, 2], [1]) == [{"path": "", "a": [1, 2], "b": [1]}]
