"""Reading and writing ``manifest.json``, the contract between prepare and train.

A dataset version is a directory (or object-store prefix) ``<root>/<name>/v-<fingerprint>/``;
it exists only once its manifest is written. ``<root>/<name>/LATEST`` names the newest
complete version; a version id works without it. Locations are paths or URIs
(:mod:`pipeline.storage`).
"""
from __future__ import annotations

import gc
import json
import os
import re

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
        manifest = _loads(storage.read_text(manifest_path))
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
    check_all_inside(version_dir, [entry["path"] for entry in listed_files(manifest)], f"{manifest_path} lists")
    return version_dir, manifest


def _loads(text: str):
    """``json.loads`` with the cyclic garbage collector paused: the manifest of 100,000
    shards is over a million new objects, and the collections their creation triggers scan
    them again and again (0.55 -> 0.21 s here). Parsed JSON holds no reference cycles."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    finally:
        if paused:
            gc.enable()


def listed_files(manifest: dict) -> list[dict]:
    """Every file a manifest names (shards of every split, rejected files): dicts with
    at least ``path`` and ``bytes``."""
    files = [shard for split in manifest["splits"].values() for shard in split["shards"]]
    return files + list(manifest["rejected"].get("files", []))


def check_inside(base: str, entry: str, what: str) -> None:
    """Refuse ``entry`` unless it is a relative path that stays inside ``base`` (no
    absolute path, URI, ``..`` or, on a local disk, symlink leading out)."""
    check_all_inside(base, [entry], what)


# A relative path of plain names (no empty, "." or ".." part, no scheme, no backslash): the
# shards prepare writes. Anything else gets the full check, part by part.
_PLAIN_PATH = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.=-]*/)*[A-Za-z0-9_][A-Za-z0-9_.=-]*")


def check_all_inside(base: str, entries: list[str], what: str) -> None:
    """:func:`check_inside` for every entry in one pass: a manifest of 100,000 shards is
    checked in a listing of each directory, not two ``realpath`` calls per shard."""
    for entry in entries:
        if not _PLAIN_PATH.fullmatch(entry):
            parts = entry.replace("\\", "/").split("/")
            if not entry or entry.startswith("/") or storage.scheme(entry) or ".." in parts or "" in parts[:-1]:
                raise ManifestError(f"{what} {entry!r}, which is not a relative path inside {base}; the manifest was not "
                                    "written by this pipeline or was edited: re-run prepare")
    if not storage.is_local(base):
        return
    root = os.path.realpath(storage.resolve(base)[1])
    by_dir: dict[str, list[str]] = {}
    for entry in entries:
        parent, _, name = entry.rpartition("/")
        by_dir.setdefault(parent, []).append(name)
    for parent, names in by_dir.items():
        real = os.path.realpath(os.path.join(root, parent))
        if parent and not real.startswith(root + os.sep):
            _leads_out(base, f"{parent}/{names[0]}", real, what)
        try:  # one listing says which names are links; only those are resolved
            with os.scandir(real) as it:
                links = {e.name for e in it if e.is_symlink()}
        except OSError:  # no such directory: its files are missing, which reading them reports
            continue
        for name in sorted(links.intersection(names)):
            entry = f"{parent}/{name}" if parent else name
            target = os.path.realpath(os.path.join(root, entry))
            if not target.startswith(root + os.sep):
                _leads_out(base, entry, target, what)


def _leads_out(base: str, entry: str, target: str, what: str) -> None:
    raise ManifestError(f"{what} {entry!r}, which leads out of {base} (a symlink to {target}); "
                        "replace the link with the file, or re-run prepare")


def dataset_dir(root: str, name: str) -> str:
    """Directory (prefix) holding all versions of dataset ``name``."""
    return storage.join(storage.absolute(str(root)), name)
