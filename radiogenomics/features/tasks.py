"""Work items of an extraction run and the worker function that computes one (or reads it from the cache).

An item is one unit of imaging work: radiomics or a deep embedding of one (patient, modality, ROI) row of
images.csv, or the dose features of one structure of a patient (its DOSE grid and that ROI's mask). Items are
plain picklable dataclasses, so the same :func:`run_item` runs in-process, in a process pool or on a Dask
worker. Failures are returned, never raised: one bad patient must not stop the run.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from radiogenomics.errors import InputError
from radiogenomics.features.cache import FeatureCache, item_key
from radiogenomics.features.provenance import CodeDependencies, code_digest
from radiogenomics.features.reader import PatientReader

log = logging.getLogger(__name__)

RADIOMICS = "radiomics"
DEEP = "deep"
DOSE = "dose"

#: Libraries whose version is part of each item kind's cache key.
PACKAGES: dict[str, tuple[str, ...]] = {
    RADIOMICS: ("radiogenomics", "pyradiomics-bhklab", "SimpleITK", "numpy", "PyWavelets", "scipy"),
    DEEP: ("radiogenomics", "monai", "torch", "SimpleITK", "numpy"),
    DOSE: ("radiogenomics", "SimpleITK", "numpy"),
}

#: The package's own code and data each item kind depends on (part of its cache key, see
#: :mod:`radiogenomics.features.provenance`): the modules are followed through their imports, so the image, mask and
#: RTSTRUCT readers count for every kind; the files count by their bytes.
_DISPATCH = "features/tasks.py"
_ALIASES = "radiobiology/data/structure_aliases.yaml"  # which structure of an RTSTRUCT a role means
CODE: dict[str, CodeDependencies] = {
    RADIOMICS: CodeDependencies(modules=("features/radiomics_extraction.py", "cohort/imageio.py"),
                                files=(_DISPATCH, _ALIASES, "features/params/*.yaml")),
    DEEP: CodeDependencies(modules=("features/deep.py", "cohort/imageio.py"), files=(_DISPATCH, _ALIASES)),
    DOSE: CodeDependencies(modules=("features/dosimetric.py", "cohort/imageio.py"),
                           files=(_DISPATCH, _ALIASES, "features/data/geud_a.yaml",
                                  "radiobiology/data/ntcp_parameters.yaml")),
}


@dataclass(frozen=True)
class RoiRef:
    """One ROI mask: the label map / RTSTRUCT, the ROI's role and label, the image whose grid it uses, and the
    structure's name in the mask file (images.csv ``structure``) and cohort.yaml's names of the role."""

    mask: str
    roi: str
    label: int
    reference_image: str
    structure: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkItem:
    """One unit of work. ``params`` is kind-specific (pyradiomics parameters / deep config).

    ``roi`` is the structure's role (features are keyed by it); ``structure`` the name in the mask file when the
    images.csv row gives one, ``aliases`` cohort.yaml's names of the role. Dose items have ``image`` = the DOSE
    grid, ``roi`` = the role and ``rois`` = candidate masks of it.
    """

    kind: str
    patient_id: str
    modality: str
    roi: str
    image: str
    mask: str | None = None
    label: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    rois: tuple[RoiRef, ...] = ()
    structure: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def item_id(self) -> str:
        return f"{self.kind}:{self.patient_id}:{self.modality}:{self.roi}"

    def input_files(self) -> list[str | None]:
        files: list[str | None] = [self.image, self.mask]
        for ref in self.rois:
            files += [ref.mask, ref.reference_image]
        checkpoint = self.params.get("checkpoint") if self.kind == DEEP else None
        if checkpoint:
            files.append(str(checkpoint))
        return files

    def key_params(self) -> dict[str, Any]:
        """Everything besides file bytes that the result depends on."""
        params: dict[str, Any] = {"modality": self.modality, "roi": self.roi, "label": self.label,
                                  "params": self.params, "rois": [_ref_key(r) for r in self.rois]}
        if self.structure or self.aliases:  # absent when unused: the keys of cohorts without them stay as they were
            params["structure"], params["aliases"] = self.structure, list(self.aliases)
        return params


def _ref_key(ref: RoiRef) -> tuple[Any, ...]:
    return (ref.roi, ref.label, ref.structure, list(ref.aliases)) if ref.structure or ref.aliases else (
        ref.roi, ref.label)


@dataclass
class ItemResult:
    """Outcome of one item: ``status`` is ``computed``, ``cached`` or ``failed``."""

    item: WorkItem
    status: str
    features: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    error_type: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    worker: str = ""
    peak_rss_mb: float = 0.0


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def compute_item(item: WorkItem, reader: PatientReader | None = None) -> dict[str, float]:
    """The features of one item (no cache). Raises InputError for bad input. ``reader``: the patient task's
    decoded images (a fresh one when None)."""
    reader = reader or PatientReader()
    if item.kind == RADIOMICS:
        from radiogenomics.features.radiomics_extraction import extract_radiomics

        image = reader.image(item.image)
        if item.mask is None:
            raise InputError("radiomics needs a mask", patient_id=item.patient_id)
        mask = reader.mask(item.mask, item.image, item.roi, item.label, patient_id=item.patient_id,
                           structure=item.structure, aliases=item.aliases)
        return extract_radiomics(image, mask, item.params)
    if item.kind == DEEP:
        from radiogenomics.features.deep import embed_item

        return embed_item(item, reader)
    if item.kind == DOSE:
        from radiogenomics.features.dosimetric import structure_dose_features

        dose, mask = dose_and_mask(item, reader)
        return structure_dose_features(dose, {item.roi: mask})
    raise ValueError(f"unknown work item kind {item.kind!r}")


def dose_and_mask(item: WorkItem, reader: PatientReader | None = None) -> tuple[Any, Any]:
    """The DOSE grid of a dose item and the first of its candidate masks that reads cleanly (images.csv order:
    a corrupt CT does not cost the DVH when the same label map reads on the PET grid)."""
    reader = reader or PatientReader()
    dose = reader.image(item.image)
    first_error: InputError | None = None
    for ref in item.rois:
        try:
            return dose, reader.mask(ref.mask, ref.reference_image, ref.roi, ref.label, patient_id=item.patient_id,
                                     structure=ref.structure, aliases=ref.aliases)
        except InputError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    raise InputError(f"no mask for ROI {item.roi!r} to compute its DVH", patient_id=item.patient_id)


def cache_key(item: WorkItem) -> str:
    """Content address of an item: file bytes + parameters + library versions + the package's own code and data
    that the kind depends on (see cache.item_key and :data:`CODE`)."""
    return item_key(item.kind, item.input_files(), item.key_params(), PACKAGES[item.kind],
                    code=code_digest(CODE[item.kind]))


def lookup(item: WorkItem, cache_dir: str | None) -> tuple[str, ItemResult | None]:
    """(cache key, cached result or None). Hashing a missing or unreadable file gives no key and no hit."""
    if cache_dir is None:
        return "", None
    try:
        key = cache_key(item)
    except OSError:
        return "", None  # the worker reports the unreadable file as this item's failure
    features = FeatureCache(cache_dir).get(key)
    if features is None:
        return key, None
    return key, ItemResult(item=item, status="cached", features=features)


def run_item(item: WorkItem, cache_dir: str | None, key: str = "",
             reader: PatientReader | None = None) -> ItemResult:
    """Compute one item and store it under ``key`` in the cache; every exception becomes a ``failed`` result.

    ``key`` is normally computed by the caller (:func:`lookup`); when empty and a cache is given it is
    computed here, and an entry already in the cache is returned without computing.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    worker = f"{os.uname().nodename}:{os.getpid()}"
    result = ItemResult(item=item, status="failed", worker=worker)
    try:
        cache = FeatureCache(cache_dir) if cache_dir is not None else None
        cached = None
        if cache is not None and not key:
            key = cache_key(item)
            cached = cache.get(key)
        if cached is not None:
            result.status, result.features = "cached", cached
        else:
            features = compute_item(item, reader)
            if cache is not None and key:
                cache.put(key, features, {"item": item.item_id})
            result.status, result.features = "computed", features
    except InputError as exc:
        result.reason, result.error_type = str(exc), "InputError"
    except Exception as exc:  # a corrupt file can raise anything from deep inside a library
        result.reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
        result.error_type = type(exc).__name__
        log.debug("item %s failed:\n%s", item.item_id, traceback.format_exc())
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu_start
    result.peak_rss_mb = _peak_rss_mb()
    return result


def run_patient(jobs: list[tuple[WorkItem, str]], cache_dir: str | None) -> list[ItemResult]:
    """:func:`run_item` for every (item, cache key) of one patient, sharing one :class:`PatientReader`: each image
    and label map is decoded once for the patient, and freed when this returns (memory per worker: one patient)."""
    reader = PatientReader()
    try:
        return [run_item(item, cache_dir, key, reader) for item, key in jobs]
    finally:
        del reader
