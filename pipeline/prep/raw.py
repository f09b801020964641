"""What every source reader returns, and the errors and listing they share.

The per-source readers (:mod:`pipeline.prep.sources` for csv/json/parquet,
:mod:`~pipeline.prep.images`, :mod:`~pipeline.prep.ucr`, :mod:`~pipeline.prep.synthetic`)
import these; :func:`pipeline.prep.sources.read_source` dispatches among them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.fs as pafs

from pipeline import storage

CORRUPT_COLUMN = "_corrupt_record"


class SourceError(ValueError):
    """An input that cannot be read; the message names the path and what to do."""


@dataclass
class RawData:
    """Rows of a source before validation.

    Args:
        df: the rows; ``columns`` are kept verbatim in rejected/.
        columns: raw columns a user recognises (written to rejected/).
        label: column holding the raw label.
        key: columns hashed into the row id (decides the split).
        files: input files (their paths, sizes and mtimes enter the fingerprint).
        features: feature builders (see :mod:`pipeline.prep.features`).
        reasons: source-level reason columns (e.g. malformed lines), checked first.
        classes: label set the source declares (UCR header, generators), if any.
        source_split: column holding 'train'/'test' when the source is pre-split.
    """

    df: object
    columns: list[str]
    label: str
    key: list[str]
    files: list[str]
    features: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    classes: list[str] | None = None
    source_split: str | None = None


def list_input_files(path: str) -> list[storage.Entry]:
    """All files a source location covers (a file, a directory tree or a glob), sorted.

    Listing is only for the fingerprint and for messages: Spark reads the location itself,
    through its own filesystem layer. Names starting with ``.`` or ``_`` inside a
    directory are skipped, as Spark skips them.
    """
    if any(ch in path for ch in "*?["):
        files = storage.glob(path)
    else:
        found = storage.info(path)
        if found.type == pafs.FileType.File:
            files = [storage.Entry(path, found.size, found.mtime_ns)]
        elif found.type == pafs.FileType.Directory:
            files = storage.list_files(path, hidden=False)
        else:
            raise SourceError(f"data.source.path {path!r} does not exist; check the path in the config")
    if not files:
        raise SourceError(f"data.source.path {path!r} matches no files")
    return files
