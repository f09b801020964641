"""Fingerprints, staging directories and the atomic publish of a dataset version."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import pipeline
from pipeline.manifest import LATEST_NAME, MANIFEST_NAME, atomic_write_text

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


def fingerprint(input_files: list[str], data_config: dict, code: str) -> str:
    """Stable id of (input files' paths, sizes and mtimes, data config, code version)."""
    files = []
    for path in input_files:
        st = os.stat(path)
        files.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    relevant = {k: v for k, v in data_config.items() if k not in ("reader", "root", "version")}
    blob = json.dumps({"files": files, "config": relevant, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def version_name(fp: str) -> str:
    return f"v-{fp}"


def published_version(dataset_dir: Path, fp: str) -> Path | None:
    """The complete version with fingerprint ``fp``, if one exists."""
    target = dataset_dir / version_name(fp)
    return target if (target / MANIFEST_NAME).is_file() else None


def new_staging_dir(dataset_dir: Path, fp: str) -> Path:
    """A fresh directory to write a version into before it is published."""
    staging = dataset_dir / f".staging-{fp}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    return staging


def publish_version(staging: Path, dataset_dir: Path, fp: str) -> Path:
    """Rename a complete staging dir to ``v-<fp>`` and point LATEST at it, atomically.

    The staging dir must already hold ``manifest.json``: a version without one never
    appears under its final name.
    """
    assert (staging / MANIFEST_NAME).is_file(), f"{staging} has no manifest"
    target = dataset_dir / version_name(fp)
    os.rename(staging, target)
    atomic_write_text(dataset_dir / LATEST_NAME, target.name + "\n")
    return target


def discard_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
