"""Content-addressed cache of per-item features, with atomic writes.

The key of an item is the SHA-256 of everything its features depend on: the bytes of every input file
(image, mask, dose grid, checkpoint), the parameters, the versions of the libraries that compute them and the
digest of the package's own code and data files they use (:mod:`radiogenomics.features.provenance`).
Changing any byte or parameter gives a new key, so a stale entry can never be returned. An entry is a
small JSON file written to a temporary name and renamed into place (``os.replace`` is atomic on POSIX), so
a run killed at any moment leaves either a complete entry or none. A hit refreshes the entry's modification
time, so :func:`prune` can remove the least recently used entries first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_digest(path: Path | str) -> str:
    """SHA-256 of a file's bytes; for a folder (DICOM series), of its files' relative names and digests.

    File digests are memoised per process on (path, size, modification time), so an image shared by
    several ROIs is read once per run.
    """
    path = Path(path).resolve()
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(child.relative_to(path).as_posix().encode())
            h.update(b"\0")
            h.update(file_digest(child).encode())
        return h.hexdigest()
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=4)
def library_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``packages`` (``"absent"`` when not installed)."""
    out: dict[str, str] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def item_key(kind: str, files: Iterable[Path | str | None], params: Mapping[str, Any],
             packages: tuple[str, ...], code: str = "") -> str:
    """Cache key of one work item (hex SHA-256); ``code``: digest of the package code and data it depends on."""
    payload = {
        "kind": kind,
        "code": code,
        "files": [file_digest(f) if f is not None else None for f in files],
        "params": params,
        "versions": library_versions(tuple(sorted(packages))),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new, uniquely named file in ``path``'s folder, open for writing, created with mode 0666 so that the
    umask applies as to any file the process creates (``tempfile.mkstemp`` creates 0600: every output would be
    private whatever the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the complete new one, never a part.

    The file gets the mode a plain ``open`` gives it: 0666 less the umask (0644 under umask 022, 0600 under 077).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _encode(value: float) -> float | str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _decode(value: float | str | None) -> float:
    if value is None:
        return float("nan")
    return float(value)


class FeatureCache:
    """Entries ``<root>/<key[:2]>/<key>.json`` holding ``{"features": {name: float}, "meta": {...}}``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, float] | None:
        """The cached features of ``key``, or None (a missing or unreadable entry counts as absent)."""
        path = self.path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            features = {str(k): _decode(v) for k, v in data["features"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        with contextlib.suppress(OSError):  # last use, for prune(); a read-only cache still serves hits
            os.utime(path)
        return features

    def put(self, key: str, features: Mapping[str, float], meta: Mapping[str, Any] | None = None) -> None:
        body = {"features": {k: _encode(float(v)) for k, v in features.items()}, "meta": dict(meta or {})}
        atomic_write_bytes(self.path(key), json.dumps(body, sort_keys=True).encode())

    def keys(self) -> list[str]:
        """Keys of the complete entries (temporary files of interrupted writes are ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("??/*.json") if not p.name.startswith("."))

    def __len__(self) -> int:
        return len(self.keys())


@dataclass(frozen=True)
class CacheEntry:
    """One file of the cache folder: a complete entry, or a temporary file left by an interrupted write."""

    path: Path
    size_bytes: int
    last_used: float  # modification time, seconds since the epoch (refreshed by every hit)

    @property
    def temporary(self) -> bool:
        return self.path.name.startswith(".")


@dataclass
class PruneReport:
    """What :func:`prune` removed (or would remove, in a dry run) and the cache size before and after."""

    removed: list[CacheEntry]
    n_before: int
    size_before_bytes: int
    dry_run: bool = False

    @property
    def n_after(self) -> int:
        return self.n_before - sum(not e.temporary for e in self.removed)

    @property
    def size_after_bytes(self) -> int:
        return self.size_before_bytes - sum(e.size_bytes for e in self.removed)


#: A temporary file older than this is the remnant of a killed write; prune always removes it.
STALE_TEMPORARY_S = 86400.0


def cache_entries(root: Path | str) -> list[CacheEntry]:
    """Every entry and temporary file under ``root`` (``<key[:2]>/<key>.json`` and ``.<name>.tmp``)."""
    root = Path(root)
    entries = []
    for path in [*root.glob("??/*.json"), *root.glob("??/.*.tmp")]:
        with contextlib.suppress(OSError):  # removed meanwhile by a concurrent prune
            st = path.stat()
            entries.append(CacheEntry(path=path, size_bytes=st.st_size, last_used=st.st_mtime))
    return entries


def prune(root: Path | str, *, older_than_days: float | None = None, max_size_bytes: int | None = None,
          dry_run: bool = False, now: float | None = None) -> PruneReport:
    """Remove entries last used more than ``older_than_days`` ago, then the least recently used ones until the
    cache holds at most ``max_size_bytes``; temporary files older than a day always go. ``dry_run``: remove
    nothing, report what would go. Entries that vanish meanwhile (a concurrent prune) are skipped."""
    now = time.time() if now is None else now
    entries = sorted(cache_entries(root), key=lambda e: e.last_used)
    report = PruneReport(removed=[], n_before=sum(not e.temporary for e in entries),
                         size_before_bytes=sum(e.size_bytes for e in entries), dry_run=dry_run)
    cutoff = None if older_than_days is None else now - older_than_days * 86400.0
    kept = []
    for entry in entries:
        stale_tmp = entry.temporary and now - entry.last_used > STALE_TEMPORARY_S
        if stale_tmp or (cutoff is not None and not entry.temporary and entry.last_used < cutoff):
            report.removed.append(entry)
        else:
            kept.append(entry)
    if max_size_bytes is not None:
        size = sum(e.size_bytes for e in kept)
        for entry in kept:  # oldest last use first
            if size <= max_size_bytes:
                break
            if entry.temporary:
                continue  # a write in progress
            report.removed.append(entry)
            size -= entry.size_bytes
    if not dry_run:
        for entry in report.removed:
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
            with contextlib.suppress(OSError):  # the <key[:2]> folder, when now empty
                entry.path.parent.rmdir()
    return report
