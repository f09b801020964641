"""Reading and writing ``manifest.json``, the contract between prepare and train.

A dataset version is a directory (or object-store prefix) ``<root>/<name>/v-<fingerprint>/``;
it exists only once its manifest is written. ``<root>/<name>/LATEST`` names the newest
complete version; a version id works without it. Locations are paths or URIs
(:mod:`pipeline.storage`).
"""
from __future__ import annotations

import json
import os

from pipeline import storage

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LATEST_NAME = "LATEST"
REQUIRED_KEYS = ("format_version", "name", "fingerprint", "input_rows", "rejected", "schema", "featurizer", "splits")


class ManifestError(ValueError):
    """A dataset path without a usable manifest; the message names the path and the fix."""


def write_manifest(version_dir: str, manifest: dict) -> str:
    """Write the manifest as one complete object, last: it publishes the version."""
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    assert not missing, f"manifest lacks {missing}"
    path = storage.join(version_dir, MANIFEST_NAME)
    storage.write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def resolve_version(path: str) -> str:
    """Turn a version dir, a manifest file or a dataset dir (via LATEST) into a version dir."""
    path = storage.absolute(str(path)).rstrip("/")
    if storage.basename(path) == MANIFEST_NAME:
        path = storage.parent(path)
    if storage.is_file(storage.join(path, MANIFEST_NAME)):
        return path
    latest = storage.join(path, LATEST_NAME)
    if storage.is_file(latest):
        name = storage.read_text(latest).strip()
        check_inside(path, name, f"{latest} names")
        target = storage.join(path, name)
        if storage.is_file(storage.join(target, MANIFEST_NAME)):
            return target
        raise ManifestError(f"{latest} points to {target}, which has no {MANIFEST_NAME}; re-run prepare")
    if not storage.exists(path):
        raise ManifestError(f"dataset path {path} does not exist; run `python -m pipeline prepare` first")
    raise ManifestError(
        f"{path} is neither a dataset version (no {MANIFEST_NAME}) nor a dataset directory (no {LATEST_NAME}); "
        "an unfinished prepare leaves no manifest: re-run prepare"
    )


def read_manifest(path: str) -> tuple[str, dict]:
    """Return ``(version_dir, manifest)`` for ``path``; see :func:`resolve_version`."""
    version_dir = resolve_version(path)
    manifest_path = storage.join(version_dir, MANIFEST_NAME)
    try:
        manifest = json.loads(storage.read_text(manifest_path))
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
    for entry in listed_files(manifest):
        check_inside(version_dir, entry["path"], f"{manifest_path} lists")
    return version_dir, manifest


def listed_files(manifest: dict) -> list[dict]:
    """Every file a manifest names (shards of every split, rejected files): dicts with
    at least ``path`` and ``bytes``."""
    files = [shard for split in manifest["splits"].values() for shard in split["shards"]]
    return files + list(manifest["rejected"].get("files", []))


def check_inside(base: str, entry: str, what: str) -> None:
    """Refuse ``entry`` unless it is a relative path that stays inside ``base`` (no
    absolute path, URI, ``..`` or, on a local disk, symlink leading out)."""
    parts = entry.replace("\\", "/").split("/")
    if not entry or entry.startswith("/") or storage.scheme(entry) or ".." in parts or "" in parts[:-1]:
        raise ManifestError(f"{what} {entry!r}, which is not a relative path inside {base}; the manifest was not written "
                            "by this pipeline or was edited: re-run prepare")
    if storage.is_local(base):
        root = os.path.realpath(storage.resolve(base)[1])
        target = os.path.realpath(os.path.join(root, entry))
        if not target.startswith(root + os.sep):
            raise ManifestError(f"{what} {entry!r}, which leads out of {base} (a symlink to {target}); "
                                "replace the link with the file, or re-run prepare")


def dataset_dir(root: str, name: str) -> str:
    """Directory (prefix) holding all versions of dataset ``name``."""
    return storage.join(storage.absolute(str(root)), name)
