"""Output paths checked at the boundary: a folder or file we are about to write, or a clear ``InputError``.

Every command that writes (``synth``, ``extract``, ``demo``, ``cache``) calls these before doing any work, so
an unwritable path is reported in one line naming the path and the fix, never as a traceback after minutes
of computation.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from radiogenomics.errors import InputError


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def output_dir(path: Path | str, what: str, *, create: bool = True) -> Path:
    """Check (and by default create) a folder we will write into; return it.

    Raises :class:`InputError` when the path or one of its parents is a file, when a parent is missing and
    cannot be created, or when the folder is not writable.
    """
    folder = Path(path)
    base = _first_existing(folder)
    if not base.is_dir():
        inside = "is a file" if base == folder else f"lies inside the file {base}"
        raise InputError(f"{what} {folder} {inside}.", file=str(folder),
                         fix=f"choose a folder path for the {what} that is not a file.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{what} {folder}: {base} is not writable.", file=str(folder),
                         fix=f"choose a writable location for the {what}.")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise InputError(f"cannot create the {what} {folder}: {reason}.", file=str(folder),
                             fix=f"choose a writable location for the {what}.") from exc
    return folder


def output_file(path: Path | str, what: str) -> Path:
    """Check a file path we will write (its folder is created); a folder at that path is an error."""
    file = Path(path)
    if file.is_dir():
        raise InputError(f"{what} {file} is a folder.", file=str(file), fix=f"give a file path for the {what}.")
    output_dir(file.parent, f"folder of the {what}")
    if file.exists() and not os.access(file, os.W_OK):
        raise InputError(f"{what} {file} is not writable.", file=str(file),
                         fix=f"choose a writable path for the {what}.")
    return file


#: OS errors that mean "this path is wrong" (bad input, exit 2), not an internal error.
PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
                         errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP})


def path_error(exc: OSError) -> InputError | None:
    """An :class:`InputError` for an OS error about a user's path (see :data:`PATH_ERRNOS`), else None."""
    if exc.errno not in PATH_ERRNOS or not exc.filename:
        return None
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return InputError(f"{exc.filename}: {reason}.", file=str(exc.filename),
                      fix="check the path: it must exist where it is read, be a file or folder as the command "
                          "expects, and be writable where it is written.")
