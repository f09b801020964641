"""Reading and writing ``manifest.json``, the contract between prepare and train.

A dataset version is a directory ``<root>/<name>/v-<fingerprint>/``; it exists only once
its manifest is written. ``<root>/<name>/LATEST`` names the newest complete version.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LATEST_NAME = "LATEST"
REQUIRED_KEYS = ("format_version", "name", "fingerprint", "input_rows", "rejected", "schema", "featurizer", "splits")


class ManifestError(ValueError):
    """A dataset path without a usable manifest; the message names the path and the fix."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (the checksum the manifest records per shard)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(version_dir: str | Path, manifest: dict) -> Path:
    """Write the manifest last and atomically; returns its path."""
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    assert not missing, f"manifest lacks {missing}"
    path = Path(version_dir) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def resolve_version(path: str | Path) -> Path:
    """Turn a version dir, a manifest file or a dataset dir (via LATEST) into a version dir."""
    path = Path(path)
    if path.name == MANIFEST_NAME:
        path = path.parent
    if (path / MANIFEST_NAME).is_file():
        return path
    latest = path / LATEST_NAME
    if latest.is_file():
        target = path / latest.read_text().strip()
        if (target / MANIFEST_NAME).is_file():
            return target
        raise ManifestError(f"{latest} points to {target}, which has no {MANIFEST_NAME}; re-run prepare")
    if not path.exists():
        raise ManifestError(f"dataset path {path} does not exist; run `python -m pipeline prepare` first")
    raise ManifestError(
        f"{path} is neither a dataset version (no {MANIFEST_NAME}) nor a dataset directory (no {LATEST_NAME}); "
        "an unfinished prepare leaves no manifest: re-run prepare"
    )


def read_manifest(path: str | Path) -> tuple[Path, dict]:
    """Return ``(version_dir, manifest)`` for ``path``; see :func:`resolve_version`."""
    version_dir = resolve_version(path)
    manifest_path = version_dir / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{manifest_path} is not valid JSON ({err}); re-run prepare") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"{manifest_path} lacks keys {missing}; it was not written by this pipeline")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ManifestError(
            f"{manifest_path} has format_version {manifest['format_version']}, this code reads "
            f"{FORMAT_VERSION}; re-run prepare with this version"
        )
    return version_dir, manifest


def dataset_dir(root: str | Path, name: str) -> Path:
    """Directory holding all versions of dataset ``name``."""
    return Path(root) / name
