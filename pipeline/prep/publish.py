"""Fingerprints and the commit protocol of a dataset version.

A version is written in place at ``<dataset>/v-<fp>/``: task attempts write under its
``_staging/`` prefix, the driver moves the committed files to their final names, then
writes ``manifest.json`` in one PUT (or an atomic rename on a local disk). The manifest
is the commit: without it the prefix is not a version, whatever else is there, and the
next prepare removes it. ``LATEST`` is written after the manifest and is only a
convenience: a version id always works without it. Nothing here needs an atomic
directory rename, so the protocol holds on object stores.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pipeline
from pipeline import storage
from pipeline.manifest import LATEST_NAME, MANIFEST_NAME, ManifestError, listed_files, read_manifest

log = logging.getLogger(__name__)

# Code whose change changes what prepare writes, and so the fingerprint.
_CODE_FILES = ("prep", "schema.py", "manifest.py")


def code_version() -> str:
    """Package version plus a hash of the preprocessing source files."""
    root = Path(pipeline.__file__).parent
    digest = hashlib.sha256()
    for name in _CODE_FILES:
        target = root / name
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for f in files:
            digest.update(f.relative_to(root).as_posix().encode())
            digest.update(f.read_bytes())
    return f"{pipeline.__version__}+{digest.hexdigest()[:12]}"


def fingerprint(input_files: list[storage.Entry], data_config: dict, code: str) -> str:
    """Stable id of (input files' locations, sizes and mtimes, data config, code version)."""
    files = [[f.uri, f.size, f.mtime_ns] for f in input_files]
    relevant = {k: v for k, v in data_config.items() if k not in ("reader", "root", "version")}
    blob = json.dumps({"files": files, "config": relevant, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def version_name(fp: str) -> str:
    return f"v-{fp}"


def published_version(dataset_dir: str, fp: str) -> str | None:
    """The version with fingerprint ``fp`` if it is published and intact: its manifest and
    every file it lists, with the listed size. A version that lost or changed a file is
    unpublished (manifest removed first, so it never reads as complete) and None returned:
    prepare then builds it again."""
    target = storage.join(dataset_dir, version_name(fp))
    if not storage.is_file(storage.join(target, MANIFEST_NAME)):
        return None
    try:
        manifest = read_manifest(target)[1]
    except ManifestError as err:
        problem = str(err)
    else:
        problem = missing_or_changed(target, manifest)
    if problem is None:
        return target
    log.warning("%s is not intact (%s): rebuilding it", target, problem)
    storage.delete(storage.join(target, MANIFEST_NAME))
    storage.delete_dir(target)
    return None


def missing_or_changed(version_dir: str, manifest: dict) -> str | None:
    """None when every file the manifest lists is there with its recorded size; else the
    first one that is not, in words."""
    files = listed_files(manifest)
    for entry, size in zip(files, storage.sizes([storage.join(version_dir, f["path"]) for f in files])):
        if size is None:
            return f"{entry['path']} is missing"
        if size != entry["bytes"]:
            return f"{entry['path']} has {size} bytes, the manifest says {entry['bytes']}"
    return None


def remove_unpublished(dataset_dir: str) -> list[str]:
    """Delete every ``v-*`` prefix without a manifest: what prepares killed before their
    commit left behind. Returns what was removed (and logs it).

    Two prepares of the same dataset name must not run at once: each takes the other's
    unfinished version for a leftover.
    """
    removed = []
    for version in storage.list_dirs(dataset_dir):
        if storage.basename(version).startswith("v-") and not storage.is_file(storage.join(version, MANIFEST_NAME)):
            log.info("removing %s: an unfinished prepare left it without a manifest", version)
            storage.delete_dir(version)
            removed.append(version)
    return removed


def point_latest(dataset_dir: str, version_dir: str) -> None:
    """Make LATEST name ``version_dir`` (written after its manifest; rewritten only when it
    names something else)."""
    latest = storage.join(dataset_dir, LATEST_NAME)
    name = storage.basename(version_dir)
    if storage.is_file(latest) and storage.read_text(latest).strip() == name:
        return
    storage.write_text(latest, name + "\n")
