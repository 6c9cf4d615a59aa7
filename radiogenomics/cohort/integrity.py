"""File integrity checks that image readers cannot be trusted to make."""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path

from radiogenomics.errors import InputError


def check_gzip_complete(path: str | Path | None) -> None:
    """Raise InputError when a ``.gz`` file is truncated or corrupt.

    ITK's NIfTI reader silently zero-fills a truncated ``.nii.gz``, which would turn a damaged file into
    plausible-looking features. For NIfTI the gzip trailer (uncompressed size) must equal the size the
    header declares; other ``.gz`` files are decompressed to the end (CRC check). Memoised per process.
    """
    if path is None or not str(path).endswith(".gz"):
        return
    st = os.stat(path)
    reason = _gzip_problem(str(path), st.st_size, st.st_mtime_ns)
    if reason:
        raise InputError(f"cannot read image: corrupt or truncated gzip file ({reason})", file=str(path),
                         fix="re-export or re-copy the file")


@functools.lru_cache(maxsize=1024)
def _gzip_problem(path: str, size: int, mtime_ns: int) -> str:
    try:
        if path.endswith(".nii.gz"):
            expected = _nifti_size(path)
            if expected is not None:
                with open(path, "rb") as fh:
                    fh.seek(-4, os.SEEK_END)
                    isize = struct.unpack("<I", fh.read(4))[0]
                if isize == expected % 2**32:
                    return ""
                return f"gzip trailer says {isize} bytes, the NIfTI header {expected}"
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error, struct.error) as exc:
        return str(exc)
    return ""


def _nifti_size(path: str) -> int | None:
    """Uncompressed size (bytes) a NIfTI-1/2 header declares, or None when it cannot tell."""
    with gzip.open(path, "rb") as fh:
        head = fh.read(544)
    for endian in ("<", ">"):
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:  # NIfTI-1 single file
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = max(int(struct.unpack(endian + "f", head[108:112])[0]), 352)
        elif len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:  # NIfTI-2 single file
            dims = struct.unpack(endian + "8q", head[16:80])
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            offset = max(struct.unpack(endian + "q", head[168:176])[0], 544)
        else:
            continue
        n = int(dims[0])
        if not 1 <= n <= 7 or bitpix <= 0:
            return None
        count = 1
        for d in dims[1 : n + 1]:
            count *= max(int(d), 1)
        return offset + count * bitpix // 8
    return None
