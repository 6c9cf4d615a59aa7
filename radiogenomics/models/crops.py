"""Multi-channel image crops around a ROI (the GTV), one per patient, cached on disk.

A crop is a fixed physical box (``box_mm`` per side) centred on the centre of the ROI's bounding box,
resampled to ``size``^3 voxels (spacing ``box_mm / size`` mm), with one channel per modality in
``modalities`` (default CT, PET_FDG, PET_FMISO) and a last channel holding the ROI mask. Each channel goes
through the MONAI dictionary-transform pipeline of :mod:`radiogenomics.features.deep` (cohort readers,
``Orientationd`` to RAS, ``Spacingd``, per-modality intensity scaling of
:data:`radiogenomics.features.deep.INTENSITY`: CT window -200..300 HU, PET windows in SUV, MR z-score; then
a fixed-box crop with zero padding). A modality the patient lacks gives a zero channel and a 0 in the
presence vector; a patient without any image of the ROI gets all zeros (the mask channel too).

Crops are cached as compressed ``.npz`` files under ``cache_dir``, keyed by the SHA-256 of the image and
mask bytes, the crop parameters, library versions and the code digest
(:func:`radiogenomics.features.cache.item_key`), so cross-validation folds read them back without
decoding any image, and a changed file or parameter never returns a stale crop.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radiogenomics.cohort.loader import row_structure
from radiogenomics.cohort.roles import role_key
from radiogenomics.errors import InputError
from radiogenomics.features.cache import atomic_write_bytes, item_key
from radiogenomics.features.provenance import CodeDependencies, code_digest

log = logging.getLogger(__name__)

#: Modalities stacked as channels by default (an MR modality can be added: ``("CT", ..., "MR_T1")``).
DEFAULT_MODALITIES: tuple[str, ...] = ("CT", "PET_FDG", "PET_FMISO")
_PACKAGES = ("monai", "numpy", "SimpleITK", "torch")
#: The code a crop depends on: this file's bytes and the transforms and readers (with their imports). Its own
#: imports are not followed, so edits elsewhere in the package (the extraction pipeline) keep the cache.
_CODE = CodeDependencies(modules=("features/deep.py", "cohort/imageio.py"), files=("models/crops.py",))


def default_crop_cache_dir() -> Path:
    """``<feature cache folder>/crops`` (``$RADIOGENOMICS_CACHE_DIR/crops`` or ``~/.cache/radiogenomics/...``)."""
    from radiogenomics.features.pipeline import default_cache_dir

    return default_cache_dir() / "crops"


@dataclass(frozen=True)
class CropSpec:
    """What a crop is: ``size`` voxels per side over ``box_mm`` millimetres, channels, ROI."""

    size: int = 32
    box_mm: float = 64.0
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    roi: str = "GTV"

    def __post_init__(self) -> None:
        if int(self.size) < 4 or float(self.box_mm) <= 0:
            raise InputError(f"crop size {self.size} voxels / box {self.box_mm} mm is not usable",
                             fix="use crop_size >= 4 and box_mm > 0")
        if not self.modalities:
            raise InputError("no image modality to crop", fix="give at least one modality, e.g. ('CT',)")

    @property
    def spacing_mm(self) -> float:
        return float(self.box_mm) / int(self.size)

    @property
    def n_channels(self) -> int:
        """Modalities plus the ROI mask channel."""
        return len(self.modalities) + 1

    def params(self) -> dict[str, object]:
        return {"size": int(self.size), "box_mm": float(self.box_mm), "modalities": list(self.modalities),
                "roi": self.roi}


@dataclass(frozen=True)
class Crops:
    """Crops of several patients: ``images`` (n, modalities + 1, size, size, size) float32 and ``present``
    (n, modalities) 0/1 float32, rows in ``patient_ids`` order."""

    patient_ids: tuple[str, ...]
    images: np.ndarray
    present: np.ndarray


def _rows(images: pd.DataFrame, patient_id: str, spec: CropSpec) -> dict[str, pd.Series]:
    """The images.csv row of each modality of ``spec`` with the ROI, matched in any case/spacing (``gtv`` is
    ``GTV``; first row when repeated)."""
    key = role_key(spec.roi)
    mine = images[(images["patient_id"] == patient_id) & (images["roi"].map(lambda r: role_key(str(r))) == key)]
    out: dict[str, pd.Series] = {}
    for modality in spec.modalities:
        rows = mine[mine["modality"] == modality]
        if len(rows):
            out[modality] = rows.iloc[0]
    return out


def compute_crop(rows: dict[str, pd.Series], spec: CropSpec, patient_id: str,
                 aliases: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(channels, present) of one patient from its images.csv rows (modality -> row): no cache. The ROI is
    ``spec.roi``'s structure: each row's ``structure`` cell, else cohort.yaml's ``aliases`` of the role, else the
    resolution of :func:`radiogenomics.cohort.read_mask`."""
    from radiogenomics.features.deep import DeepConfig, preprocess
    from radiogenomics.features.reader import PatientReader

    reader = PatientReader()  # the patient's label map decoded once for its three channels
    config = DeepConfig(spacing_mm=(spec.spacing_mm,) * 3, box_voxels=(int(spec.size),) * 3)
    n = int(spec.size)
    image = np.zeros((spec.n_channels, n, n, n), dtype=np.float32)
    present = np.zeros(len(spec.modalities), dtype=np.float32)
    for c, modality in enumerate(spec.modalities):
        row = rows.get(modality)
        if row is None:
            continue
        x = preprocess(str(row["image"]), str(row["mask"]), spec.roi, int(row["label"]), modality, config,
                       patient_id, structure=row_structure(row), aliases=aliases, reader=reader).numpy()
        image[c] = x[0]
        if not present.any():
            image[-1] = x[1]  # the ROI mask, from the first modality that has the ROI
        present[c] = 1.0
    return image, present


def _key(rows: dict[str, pd.Series], spec: CropSpec, aliases: tuple[str, ...] = ()) -> str:
    files: list[str | None] = []
    for modality in spec.modalities:
        row = rows.get(modality)
        files += [None, None] if row is None else [str(row["image"]), str(row["mask"])]
    params = {**spec.params(), "labels": {m: int(r["label"]) for m, r in rows.items()}}
    structures = {m: row_structure(r) for m, r in rows.items() if row_structure(r)}
    if structures or aliases:  # keys of cohorts without either are unchanged
        params["structures"], params["aliases"] = structures, list(aliases)
    return item_key("multimodal_crop", files, params, _PACKAGES, code=code_digest(_CODE))


def _read(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return data["image"].astype(np.float32), data["present"].astype(np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing or damaged: recompute
        return None


def _write(path: Path, image: np.ndarray, present: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, image=image, present=present)
    atomic_write_bytes(path, buffer.getvalue())


def load_crops(cohort: str | os.PathLike[str], patient_ids: Sequence[str], spec: CropSpec,
               cache_dir: str | os.PathLike[str] | None = None) -> Crops:
    """Crops of ``patient_ids`` from the cohort folder, served from the cache when present.

    A patient absent from the cohort, or without any image of ``spec.roi``, gets all-zero channels and a
    zero presence vector (a warning is logged). ``cache_dir=None`` uses :func:`default_crop_cache_dir`.
    Raises :class:`InputError` when none of ``patient_ids`` has an image of the ROI (a wrong cohort folder).
    """
    from radiogenomics.cohort import load_cohort

    loaded = load_cohort(Path(cohort))
    aliases = tuple(loaded.aliases_for(spec.roi))
    root = Path(cache_dir) if cache_dir is not None else default_crop_cache_dir()
    n = int(spec.size)
    images = np.zeros((len(patient_ids), spec.n_channels, n, n, n), dtype=np.float32)
    present = np.zeros((len(patient_ids), len(spec.modalities)), dtype=np.float32)
    without, hits = [], 0
    for i, pid in enumerate(str(p) for p in patient_ids):
        rows = _rows(loaded.images, pid, spec)
        if not rows:
            without.append(pid)
            continue
        path = root / "multimodal" / (key := _key(rows, spec, aliases))[:2] / f"{key}.npz"
        cached = _read(path)
        if cached is None:
            cached = compute_crop(rows, spec, pid, aliases)
            _write(path, *cached)
        else:
            hits += 1
        images[i], present[i] = cached
    if without and len(without) == len(patient_ids):
        raise InputError(f"none of the {len(patient_ids)} patient(s) has a {spec.roi} image in cohort {cohort}",
                         patient_id=without[0], file=str(Path(cohort) / "images.csv"),
                         fix="give the cohort folder the feature table was extracted from")
    if without:
        log.warning("crops: %d patient(s) without a %s image get zero channels (%s)", len(without), spec.roi,
                    ", ".join(without[:5]))
    log.info("crops: %d patient(s), %d from the cache in %s", len(patient_ids), hits, root)
    return Crops(patient_ids=tuple(str(p) for p in patient_ids), images=images, present=present)
