"""Content-addressed cache of per-item features, with atomic writes.

The key of an item is the SHA-256 of everything its features depend on: the bytes of every input file
(image, mask, dose grid, checkpoint), the parameters and the versions of the libraries that compute them.
Changing any byte or parameter gives a new key, so a stale entry can never be returned. An entry is a
small JSON file written to a temporary name and renamed into place (``os.replace`` is atomic on POSIX), so
a run killed at any moment leaves either a complete entry or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
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
             packages: tuple[str, ...]) -> str:
    """Cache key of one work item (hex SHA-256)."""
    payload = {
        "kind": kind,
        "files": [file_digest(f) if f is not None else None for f in files],
        "params": params,
        "versions": library_versions(tuple(sorted(packages))),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the complete new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        try:
            data = json.loads(self.path(key).read_text(encoding="utf-8"))
            return {str(k): _decode(v) for k, v in data["features"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            return None

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
