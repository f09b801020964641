"""The one place that knows about storage: plain paths and URIs -> pyarrow filesystems.

Every read and write of data, runs, models and scores goes through here. A location is a
string: a plain path (made absolute with :func:`absolute`, on the driver, before it is
handed to executors or ranks) or a URI: ``s3://`` (also ``s3a://``/``s3n://``, Spark's
spellings), ``gs://``, ``hdfs://``, ``file://``; other schemes go through fsspec when it
knows them.

S3 endpoint, region and credentials come from the standard environment
(``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, or an instance
role), so the same job runs against AWS, MinIO or SeaweedFS unchanged. Credentials inside
a URI are refused: they would end up in configs, reports and logs.

Writes are whole objects: :func:`open_output` makes a file appear complete when its block
ends, or not at all (local: temporary name, fsync, rename, fsync of the directory; object
stores: spooled locally, then one upload that only becomes visible when it completes).
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import fnmatch
import functools
import gc
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Iterator
from urllib.parse import urlsplit

import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
S3_SCHEMES = ("s3", "s3a", "s3n")
_SPOOL_BYTES = 32 << 20
_COPY_CHUNK = 8 << 20


class StorageError(RuntimeError):
    """A location that cannot be read or written; the message names it and what to check."""


@dataclass(frozen=True)
class Entry:
    """One file found by :func:`list_files`."""

    uri: str
    size: int
    mtime_ns: int | None


def scheme(location: str) -> str:
    """``s3``, ``gs``, ``file``, ... or ``""`` for a plain path (str or os.PathLike)."""
    m = _SCHEME.match(os.fspath(location))
    return m.group(1).lower() if m else ""


def is_local(location: str) -> bool:
    """True for plain paths and ``file://`` URIs."""
    return scheme(location) in ("", "file")


def absolute(location: str) -> str:
    """URIs unchanged; a plain relative path made absolute against this process's cwd.

    Call it where the user's working directory is meant (the driver), before the location
    travels to executors or ranks whose working directory is elsewhere.
    """
    location = os.fspath(location)
    if not scheme(location):
        return os.path.abspath(os.path.expanduser(location))
    _refuse_credentials(location)
    return location


def join(base: str, *parts: str) -> str:
    """``base`` with ``parts`` appended, for paths and URIs alike."""
    base = os.fspath(base)
    if not scheme(base):
        return os.path.join(base, *parts)
    prefix, rest = base.split("://", 1)
    return f"{prefix}://{posixpath.join(rest, *parts)}" if rest else f"{prefix}://{posixpath.join(*parts)}"


def parent(location: str) -> str:
    """The directory (prefix) holding ``location``."""
    location = os.fspath(location)
    if not scheme(location):
        return os.path.dirname(location.rstrip("/")) or "/"
    prefix, rest = location.split("://", 1)
    return f"{prefix}://{posixpath.dirname(rest.rstrip('/'))}"


def basename(location: str) -> str:
    """The last component of ``location``."""
    return posixpath.basename(os.fspath(location).rstrip("/"))


def relative(location: str, base: str) -> str:
    """``location`` relative to ``base`` (which must contain it)."""
    base = base.rstrip("/") + "/"
    if not location.startswith(base):
        raise ValueError(f"{location} is not inside {base}")
    return location[len(base):]


def redact(location: str) -> str:
    """``location`` with any user:password part of a URI removed (for messages)."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", location)


def _refuse_credentials(uri: str) -> None:
    if "@" in urlsplit(uri).netloc:
        raise StorageError(
            f"{redact(uri)}: credentials inside a URI are refused (they would be copied into configs, reports and "
            "logs); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the store's own variables) in the environment"
        )


# --------------------------------------------------------------------------- filesystems


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem serving ``location`` and the path to give it."""
    location = os.fspath(location)
    s = scheme(location)
    if s == "":
        return _local(), os.path.abspath(location)
    if s == "file":
        return _local(), urlsplit(location).path
    _refuse_credentials(location)
    rest = location.split("://", 1)[1]
    if s in S3_SCHEMES:
        return _s3(*_s3_settings(rest.split("/", 1)[0])), rest
    if s in ("gs", "gcs"):
        return _from_uri("gs", ""), rest
    if s in ("hdfs", "viewfs"):
        fs = _from_uri(s, urlsplit(location).netloc)
        return fs, urlsplit(location).path
    fs, spec = _fsspec(s)
    return fs, spec._strip_protocol(location)


@functools.lru_cache(maxsize=1)
def _local() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


def _s3_settings(bucket: str) -> tuple:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    # The credentials are part of the cache key only so a changed environment takes effect.
    key = (os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN"))
    return endpoint, region, bucket if (endpoint is None and region is None) else None, key


@functools.lru_cache(maxsize=16)
def _s3(endpoint: str | None, region: str | None, bucket_for_region: str | None, _credentials: tuple) -> pafs.FileSystem:
    if bucket_for_region is not None:  # on AWS with no region set: ask where the bucket lives
        try:
            region = pafs.resolve_s3_region(bucket_for_region)
        except OSError:
            region = "us-east-1"
    _release_s3_at_exit()
    # pyarrow reads the credentials from the environment (or instance metadata) itself.
    # allow_delayed_open: a small object goes up in one PUT at close (no multipart round
    # trips), so it is written whole or not at all.
    return pafs.S3FileSystem(endpoint_override=endpoint, region=region or "us-east-1", allow_delayed_open=True)


@functools.cache
def _release_s3_at_exit() -> None:
    """At exit, drop the cached S3 filesystems (and their clients) while the AWS SDK is still
    up: pyarrow shuts the SDK down in its own exit handler, registered before this one (so
    run after it), and a client destroyed after that can abort the process at exit
    ("terminate called without an active exception", apache/arrow#41087, #50188)."""
    atexit.register(_drop_s3)


def _drop_s3() -> None:
    _s3.cache_clear()
    gc.collect()  # file handles and readers in reference cycles that still hold a client


@functools.lru_cache(maxsize=16)
def _from_uri(s: str, netloc: str) -> pafs.FileSystem:
    try:
        return pafs.FileSystem.from_uri(f"{s}://{netloc}/")[0]
    except (OSError, ValueError) as err:
        raise StorageError(f"{s}://{netloc}: cannot open this filesystem ({_first_line(err)})") from None


@functools.lru_cache(maxsize=16)
def _fsspec(s: str) -> tuple[pafs.FileSystem, object]:
    try:
        import fsspec

        fs = fsspec.filesystem(s)
    except (ImportError, ValueError) as err:
        raise StorageError(
            f"no filesystem for {s}:// URIs ({_first_line(err)}); use s3://, gs://, hdfs://, file:// or a path, "
            f"or install the fsspec package for {s}://"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), fs


def endpoint_of(location: str) -> str:
    """Where ``location`` is served from, in words (for messages; never credentials)."""
    s = scheme(location)
    if s in S3_SCHEMES:
        bucket = location.split("://", 1)[1].split("/", 1)[0]
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
        return f"bucket {bucket!r} at {endpoint}"
    if s in ("", "file"):
        return "the local filesystem"
    return f"{s}://{urlsplit(location).netloc}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_DENIED = ("ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "AccessDenied", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "403", "EXPIRED_TOKEN", "Forbidden")
_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Connection refused", "Could not resolve", "Timeout", "timed out")


@contextlib.contextmanager
def translated(location: str, action: str) -> Iterator[None]:
    """Turn a filesystem error into one line naming the location, the store and the fix
    (for code that streams through a file this module opened: its reads and writes fail
    outside this module's own calls).

    FileNotFoundError passes through: callers decide what a missing file means.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except PermissionError as err:
        raise StorageError(f"{redact(location)}: permission denied while trying to {action} ({_first_line(err)}); "
                           "fix the file's permissions or run as a user who may read it") from None
    except OSError as err:
        text = _first_line(err)
        where = endpoint_of(location)
        if any(k in text for k in _DENIED):
            hint = (f"the store refused the credentials for {where}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                    "(and AWS_SESSION_TOKEN) and that they may access this bucket")
        elif any(k in text for k in _UNREACHABLE):
            hint = f"cannot reach {where}: check AWS_ENDPOINT_URL and that the store is up"
        elif "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text or "bucket does not exist" in text.lower():
            hint = f"{where} does not exist: create the bucket or fix the URI"
        elif err.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "no space left: free space or choose another location"
        else:
            hint = f"storage error at {where}"
        raise StorageError(f"{redact(location)}: could not {action}: {hint} ({text})") from None


# --------------------------------------------------------------------------- reading


def info(location: str) -> pafs.FileInfo:
    """pyarrow's FileInfo for ``location`` (type NotFound when absent)."""
    fs, path = resolve(location)
    with translated(location, "look it up"):
        return fs.get_file_info(path)


def exists(location: str) -> bool:
    return info(location).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    return info(location).type == pafs.FileType.File


def is_dir(location: str) -> bool:
    """A directory, or on object stores a prefix holding at least one object."""
    return info(location).type == pafs.FileType.Directory


def sizes(locations: list[str]) -> list[int | None]:
    """Byte sizes of ``locations`` (None where missing), looked up together."""
    if not locations:
        return []
    fs, _ = resolve(locations[0])
    paths = [resolve(loc)[1] for loc in locations]
    with translated(locations[0], "look up its files"):
        infos = fs.get_file_info(paths)
    return [i.size if i.type == pafs.FileType.File else None for i in infos]


def list_files(location: str, recursive: bool = True, hidden: bool = True) -> list[Entry]:
    """Files under ``location`` (a directory or prefix), sorted by URI; [] when absent.

    ``hidden=False`` skips names starting with ``.`` or ``_`` at any level below
    ``location`` (Hadoop's and Spark's rule for inputs).
    """
    fs, path = resolve(location)
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    with translated(location, "list it"):
        found = fs.get_file_info(selector)
    out = []
    for item in found:
        if item.type != pafs.FileType.File:
            continue
        uri = _to_location(location, path, item.path)
        if not hidden and any(part.startswith((".", "_")) for part in relative(uri, location).split("/")):
            continue
        out.append(Entry(uri, item.size, item.mtime_ns))
    return sorted(out, key=lambda e: e.uri)


def list_dirs(location: str) -> list[str]:
    """Immediate subdirectories (prefixes) of ``location``, sorted; [] when absent."""
    fs, path = resolve(location)
    with translated(location, "list it"):
        found = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted(_to_location(location, path, i.path) for i in found if i.type == pafs.FileType.Directory)


def _to_location(location: str, path: str, found: str) -> str:
    """Map a path the filesystem returned back into the form ``location`` was given in."""
    found_rel = found[len(path.rstrip("/")) + 1:] if found.startswith(path.rstrip("/") + "/") else found
    return join(location, found_rel)


def glob(pattern: str) -> list[Entry]:
    """Files matching ``pattern`` (``*``, ``?``, ``[...]`` within one path level, ``**``
    across levels), sorted. Used for listing only: Spark resolves the same pattern itself."""
    head = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    base = head if head.endswith("/") else parent(head)
    regex = re.compile(_glob_regex(pattern))
    return [e for e in list_files(base) if regex.fullmatch(e.uri)]


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            close = pattern.find("]", i + 1)
            if close < 0:
                out.append(re.escape("["))
                i += 1
            else:
                out.append(fnmatch.translate(pattern[i:close + 1])[4:-3])  # the class, without (?s:...)\Z
                i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def open_input(location: str):
    """A random-access file (pyarrow NativeFile) for ``location``: ranged reads on object
    stores."""
    fs, path = resolve(location)
    with translated(location, "open it"):
        return fs.open_input_file(path)


def read_bytes(location: str) -> bytes:
    fs, path = resolve(location)
    with translated(location, "read it"), fs.open_input_stream(path) as f:
        return f.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode("utf-8")


def sha256(location: str, chunk: int = _COPY_CHUNK) -> str:
    """Hex sha256 of the object's bytes, streamed."""
    digest = hashlib.sha256()
    fs, path = resolve(location)
    with translated(location, "read it"), fs.open_input_stream(path) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(location: str, local_path: str, chunk: int = _COPY_CHUNK) -> str:
    """Copy ``location`` to the local file ``local_path``; returns the copy's sha256."""
    digest = hashlib.sha256()
    fs, path = resolve(location)
    with translated(location, "download it"), fs.open_input_stream(path) as src, open(local_path, "wb") as dst:
        while block := src.read(chunk):
            digest.update(block)
            dst.write(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- writing


def make_dirs(location: str) -> None:
    """Create a local directory (object stores have none to create)."""
    if is_local(location):
        os.makedirs(resolve(location)[1], exist_ok=True)


@contextlib.contextmanager
def open_output(location: str) -> Iterator[BinaryIO]:
    """A binary file to write ``location`` through: it appears complete when the block
    ends without error, or not at all (an existing object stays as it was)."""
    fs, path = resolve(location)
    if fs is _local():
        folder = os.path.dirname(path)
        with translated(location, "create its directory"):
            os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
        with translated(location, "write it"):
            f = open(tmp, "wb")
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
            f.close()
            with translated(location, "write it"):
                os.replace(tmp, path)
            fsync_dir(folder)
        except BaseException:
            f.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        yield spool
        spool.seek(0)
        with translated(location, "write it"):
            # The upload becomes visible only when close() completes it; a process killed
            # before then leaves nothing (an unfinished multipart upload at most).
            out = fs.open_output_stream(path)
            while block := spool.read(_COPY_CHUNK):
                out.write(block)
            out.close()


def open_stream(location: str):
    """A plain output stream to ``location`` (object stores: visible once closed).

    Unlike :func:`open_output` a failure can leave a partial file, so use it only for
    names nothing else refers to (a task attempt's own staging file).
    """
    fs, path = resolve(location)
    with translated(location, "write it"):
        if fs is _local():
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return fs.open_output_stream(path)


def write_bytes(location: str, data: bytes) -> None:
    """Write ``data`` as one complete object (see :func:`open_output`)."""
    with open_output(location) as f:
        f.write(data)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def create_exclusive(location: str, data: bytes) -> bool:
    """Create ``location`` holding ``data`` unless it exists; False when it did. Atomic on
    a local disk (O_EXCL); on object stores a check then a write (stores without
    conditional writes cannot do better)."""
    fs, path = resolve(location)
    if fs is _local():
        with translated(location, "create it"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(os.path.dirname(path))
        return True
    if exists(location):
        return False
    write_bytes(location, data)
    return True


def upload(local_path: str, location: str) -> None:
    """Copy the local file ``local_path`` to ``location`` as one complete object."""
    with open(local_path, "rb") as src, open_output(location) as dst:
        shutil.copyfileobj(src, dst, _COPY_CHUNK)


def fsync_dir(folder: str) -> None:
    """Persist a directory entry (a rename or a new file) on local disks."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def move(src: str, dst: str) -> None:
    """Move one file: an atomic rename locally, copy + delete on object stores."""
    fs, src_path = resolve(src)
    _, dst_path = resolve(dst)
    with translated(src, f"move it to {redact(dst)}"):
        if fs is _local():
            os.makedirs(os.path.dirname(dst_path), exist_ok=True)
            os.replace(src_path, dst_path)
        else:
            fs.move(src_path, dst_path)


def move_all(pairs: list[tuple[str, str]], threads: int = 8) -> None:
    """:func:`move` each ``(src, dst)``; object-store copies run in parallel."""
    if not pairs:
        return
    if is_local(pairs[0][0]) or len(pairs) == 1:
        for src, dst in pairs:
            move(src, dst)
        for folder in sorted({parent(dst) for _, dst in pairs}):
            fsync_dir(resolve(folder)[1])
        return
    with ThreadPoolExecutor(min(threads, len(pairs))) as pool:
        list(pool.map(lambda p: move(*p), pairs))


def delete(location: str) -> None:
    """Remove one file; missing is fine."""
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError), translated(location, "delete it"):
        fs.delete_file(path)


def delete_dir(location: str) -> None:
    """Remove a directory (prefix) and everything under it; missing is fine."""
    fs, path = resolve(location)
    if fs is _local():
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError), translated(location, "delete it"):
        fs.delete_dir(path)
