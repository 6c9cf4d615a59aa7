"""``POST /v1/prescriptions/images`` (and ``/v1/adaptations/images``): one patient's uploaded files -> a
one-patient cohort -> a record (an adapted record).

This module holds the upload safety: file names reduced to safe basenames, uploads streamed to disk under
per-file, total and count limits, and zip archives (a DICOM series with its RTSTRUCT) unpacked with zip-slip,
absolute-path, symlink, entry-count and zip-bomb checks. Everything lives in a fresh per-request folder under
``workdir`` that is deleted afterwards, also on errors. :func:`prescribe_images` then builds the cohort,
validates, extracts and predicts through :mod:`radiogenomics.serving.upload_cohort` (the manifest format is
documented there and in docs/serving.md, "Uploading images").

Bad input raises :class:`~radiogenomics.errors.InputError` (the API answers 422); a limit exceeded raises
:class:`UploadTooLarge` (413).
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from radiogenomics.errors import InputError
from radiogenomics.serving.schemas import PATIENT_ID_PATTERN

if TYPE_CHECKING:
    from starlette.datastructures import UploadFile

    from radiogenomics.serving.state import LoadedModel

log = logging.getLogger(__name__)

MIB = 1024 * 1024
GIB = 1024 * MIB
CHUNK_BYTES = MIB
#: An upload's name: letters, digits, ``._+-`` and spaces, not starting with a dot (no ``.``, ``..``, hidden files).
SAFE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+ -]{0,199}")
#: Archive clutter that is skipped, never extracted (macOS resource forks, Finder and Explorer metadata).
ZIP_CLUTTER = ("__MACOSX/",)
ZIP_CLUTTER_NAMES = (".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class UploadLimits:
    """Per-request limits. Files counted by ``max_files`` are the uploads plus every entry of their zips."""

    max_file_bytes: int = 200 * MIB
    max_total_bytes: int = 1 * GIB
    max_files: int = 2000
    max_unzipped_bytes: int = 2 * GIB


class UploadTooLarge(InputError):
    """An upload limit was exceeded (the API answers 413)."""


@dataclass
class _Budget:
    """What one request has used so far, checked against its :class:`UploadLimits`."""

    limits: UploadLimits
    files: int = 0
    uploaded_bytes: int = 0
    unzipped_bytes: int = 0
    names: set[str] = field(default_factory=set)

    def add_files(self, n: int, what: str) -> None:
        self.files += n
        if self.files > self.limits.max_files:
            raise UploadTooLarge(f"too many files: {what} brings the request to {self.files} files, more than the "
                                 f"limit of {self.limits.max_files}",
                                 fix="send fewer files (zip a DICOM series) or ask the operator to raise the limit")


def check_patient_id(patient_id: str) -> str:
    """``patient_id`` when it is a pseudonymous ID of 1-64 characters ``[A-Za-z0-9._-]``; else InputError."""
    if isinstance(patient_id, str) and re.fullmatch(PATIENT_ID_PATTERN, patient_id):
        return patient_id
    raise InputError(f"form field patient_id {str(patient_id)[:80]!r} is not a pseudonymous ID",
                     fix="use 1-64 characters from A-Z, a-z, 0-9, '.', '_', '-' (never a name or hospital number)")


def safe_name(filename: str | None) -> str:
    """The upload's file name when it is a safe basename; InputError for paths, separators, NUL, hidden names."""
    name = filename or ""
    if not name:
        raise InputError("an uploaded file has no file name", fix="send every file with its name (curl -F "
                                                                   "files=@ct.nii.gz)")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        raise InputError(f"uploaded file name {name[:120]!r} is a path, not a plain file name",
                         fix="send each file under its plain name (no folders, '..', '/' or '\\'); zip a folder")
    if not SAFE_NAME_PATTERN.fullmatch(name):
        raise InputError(f"uploaded file name {name[:120]!r} has characters outside letters, digits, '._+-' "
                         "and spaces, starts with a dot, or is longer than 200 characters",
                         fix="rename the file, e.g. ct.nii.gz")
    return name


async def save_uploads(files: Sequence[UploadFile], folder: Path, budget: _Budget) -> dict[str, Path]:
    """Stream every upload to ``folder/<safe name>``; name -> path. Enforces the size and count limits."""
    limits = budget.limits
    budget.add_files(len(files), f"{len(files)} uploaded file(s)")
    folder.mkdir(parents=True, exist_ok=True)
    saved: dict[str, Path] = {}
    for upload in files:
        name = safe_name(upload.filename)
        if name in saved:
            raise InputError(f"two uploaded files are named {name!r}", file=name,
                             fix="give every uploaded file its own name")
        if upload.size is not None and upload.size > limits.max_file_bytes:
            raise _file_too_large(name, upload.size, limits)
        path = folder / name
        size = 0
        with open(path, "xb") as out:
            while chunk := await upload.read(CHUNK_BYTES):
                size += len(chunk)
                budget.uploaded_bytes += len(chunk)
                if size > limits.max_file_bytes:
                    raise _file_too_large(name, size, limits)
                if budget.uploaded_bytes > limits.max_total_bytes:
                    raise UploadTooLarge(f"the uploads exceed the limit of {limits.max_total_bytes} bytes in total",
                                         file=name, fix="send fewer or smaller files, or ask the operator to "
                                                        "raise the limit")
                await run_in_threadpool(out.write, chunk)
        if size == 0:
            raise InputError("the uploaded file is empty", file=name, fix="send the complete file")
        saved[name] = path
    return saved


def _file_too_large(name: str, size: int, limits: UploadLimits) -> UploadTooLarge:
    return UploadTooLarge(f"the file is larger ({size} bytes so far) than the limit of {limits.max_file_bytes} "
                          "bytes per file", file=name,
                          fix="send a smaller file (crop the image to the region of interest) or ask the operator "
                              "to raise the limit")


def member_parts(info: zipfile.ZipInfo, archive: str) -> tuple[str, ...] | None:
    """The safe relative path of a zip entry as parts; None for clutter and folders to skip.

    InputError for absolute paths, drive letters, ``..``, backslashes, NUL, symlinks, devices and encrypted
    entries (each names the archive and the entry).
    """
    name = info.filename
    shown = name[:200]

    def bad(why: str) -> InputError:
        return InputError(f"zip entry {shown!r} {why}", file=archive,
                          fix="zip the files with paths relative to the archive root, without links "
                              "(e.g. cd series && zip -r ../series.zip .)")

    if "\x00" in name or "\\" in name:
        raise bad("has a NUL or backslash in its path")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise bad("has an absolute path")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise bad("points outside the archive ('..')")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise bad("is a symbolic link")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise bad("is not a regular file")
    if info.flag_bits & 0x1:
        raise bad("is encrypted")
    if not parts or info.is_dir() or name.startswith(ZIP_CLUTTER) or parts[-1] in ZIP_CLUTTER_NAMES \
            or parts[-1].startswith("._"):
        return None
    return parts


def extract_zip(path: Path, dest: Path, budget: _Budget) -> Path:
    """Unpack the zip at ``path`` into ``dest`` (created) with every safety check; returns ``dest``."""
    archive = path.name
    if not zipfile.is_zipfile(path):
        raise InputError("the file is not a zip archive", file=archive,
                         fix="upload a DICOM series as a .zip archive (zip -r series.zip series/)")
    limits = budget.limits
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            budget.add_files(len(infos), f"{archive} ({len(infos)} entries)")
            declared = sum(i.file_size for i in infos)
            if budget.unzipped_bytes + declared > limits.max_unzipped_bytes:
                raise _unzipped_too_large(archive, budget.unzipped_bytes + declared, limits)
            members = [(info, member_parts(info, archive)) for info in infos]
            dest.mkdir(parents=True)
            for info, parts in members:
                if parts is not None:
                    _extract_member(zf, info, dest.joinpath(*parts), budget, archive)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InputError(f"the zip archive is corrupt or uses an unsupported feature ({exc})", file=archive,
                         fix="re-create the archive with plain deflate compression (zip -r series.zip series/)"
                         ) from exc
    return dest


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: _Budget,
                    archive: str) -> None:
    """Copy one entry, counting the bytes actually inflated against its declared size and the request limit."""
    limits = budget.limits
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "xb") as out:
            while chunk := src.read(CHUNK_BYTES):
                written += len(chunk)
                budget.unzipped_bytes += len(chunk)
                if written > info.file_size:
                    raise UploadTooLarge(f"zip entry {info.filename[:200]!r} inflates beyond its declared size "
                                         f"({info.file_size} bytes)", file=archive,
                                         fix="re-create the archive; this one looks like a zip bomb")
                if budget.unzipped_bytes > limits.max_unzipped_bytes:
                    raise _unzipped_too_large(archive, budget.unzipped_bytes, limits)
                out.write(chunk)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise InputError(f"zip entry {info.filename[:200]!r} clashes with another entry of the same path",
                         file=archive, fix="zip each file once, under distinct paths") from exc


def _unzipped_too_large(archive: str, size: int, limits: UploadLimits) -> UploadTooLarge:
    return UploadTooLarge(f"unpacking the zip archives needs {size} bytes, more than the limit of "
                          f"{limits.max_unzipped_bytes} bytes", file=archive,
                          fix="send fewer or smaller series, or ask the operator to raise the limit")


def unpack_archives(saved: Mapping[str, Path], dest: Path, budget: _Budget) -> dict[str, Path]:
    """Unzip every uploaded ``.zip`` into ``dest/<name>/``; upload name -> its folder."""
    return {name: extract_zip(path, dest / name, budget) for name, path in saved.items()
            if name.lower().endswith(".zip")}


async def prescribe_images(loaded: LoadedModel, *, patient_id: str, manifest: str, files: list[UploadFile],
                           expression: str | None, clinical: str | None, regimen: dict[str, float | None],
                           workdir: Path, cache_dir: Path | None, limits: UploadLimits,
                           timepoint: str | None = None) -> list[dict[str, Any]]:
    """The prescription records (one) of a patient from uploaded images, masks and optional expression.

    ``loaded`` is the serving state's ``LoadedModel`` (``.prescriber``, ``.info``). The form fields are parsed
    before anything is written; the uploads are then saved and unpacked in a fresh folder under ``workdir``,
    turned into a one-patient cohort (format v1), validated, extracted with the model's feature schema
    (``cache_dir``: the feature cache, None = none) and predicted with ``regimen``. With ``timepoint`` (a
    canonical ``fraction_K``) the record is then re-prescribed from the manifest's PET at that timepoint
    (``upload_cohort.adapt_upload``, contract section 8): the adapted records. The folder is deleted afterwards,
    also on errors.
    """
    from radiogenomics.serving.upload_cohort import UploadRequest, adapt_upload, parse_request, predict_upload

    request: UploadRequest = parse_request(check_patient_id(patient_id), manifest, expression, clinical)
    if timepoint is not None:
        request.check_timepoint(timepoint)  # before anything is written
    request.check_files([safe_name(f.filename) for f in files])
    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=workdir))
    try:
        budget = _Budget(limits)
        saved = await save_uploads(files, folder / "cohort" / "upload", budget)

        def build_and_predict() -> list[dict[str, Any]]:
            unpacked = unpack_archives(saved, folder / "cohort" / "unzipped", budget)
            if timepoint is not None:
                return adapt_upload(loaded, request, folder / "cohort", saved, unpacked, timepoint=timepoint,
                                    regimen=regimen, cache_dir=cache_dir)
            return predict_upload(loaded, request, folder / "cohort", saved, unpacked, regimen=regimen,
                                  cache_dir=cache_dir)

        return await run_in_threadpool(build_and_predict)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            log.error("upload: could not delete the request folder %s", folder)
