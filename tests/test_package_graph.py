"""The library's imports flow one way: ``data`` imports no other package of rs_jax, ``models`` neither
``rewards`` nor ``data``, and nothing in ``rs_jax`` imports ``tasks`` or ``configs``."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# package -> the top-level packages it must not import (type-only imports count too)
FORBIDDEN = {
    "rs_jax/data": ("rs_jax.models", "rs_jax.rewards", "rs_jax.train", "rs_jax.pipeline"),
    "rs_jax/models": ("rs_jax.rewards", "rs_jax.data", "rs_jax.train", "rs_jax.pipeline"),
    "rs_jax/rewards": ("rs_jax.train", "rs_jax.pipeline"),
    "rs_jax": ("tasks", "configs"),
}


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module a file imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_imports_flow_one_way():
    offences = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in sorted(imported_modules(path)):
                if any(module == name or module.startswith(name + ".") for name in forbidden):
                    offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offences, "\n".join(offences)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    source = tmp_path / "bad.py"
    source.write_text("from rs_jax.rewards import boxes\nimport rs_jax.data.vocab\n")
    assert {"rs_jax.rewards.boxes", "rs_jax.data.vocab"} <= imported_modules(source)
