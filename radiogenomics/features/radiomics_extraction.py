"""Handcrafted radiomics with pyradiomics for one (image, mask) pair.

Parameters are plain dictionaries in pyradiomics' own YAML schema (``imageType``, ``featureClass``,
``setting``), validated by pyradiomics itself. Shipped files live in ``radiogenomics/features/params``:
one per modality family (CT, PET, MR) plus the IBSI phantom configuration.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import yaml

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

PARAMS_DIR = Path(__file__).resolve().parent / "params"

#: Shipped parameter file per images.csv modality. DOSE has no radiomics (dose features come from DVHs).
MODALITY_PARAMS: dict[str, str] = {
    "CT": "CT.yaml",
    "PET_FDG": "PET.yaml",
    "PET_FMISO": "PET.yaml",
    "MR_T1": "MR.yaml",
    "MR_T2": "MR.yaml",
    "MR_DWI": "MR.yaml",
}

#: Selectable filters: CLI name -> (pyradiomics image type, its default custom arguments).
FILTERS: dict[str, tuple[str, dict[str, Any]]] = {
    "original": ("Original", {}),
    "log": ("LoG", {"sigma": [1.0, 2.0, 3.0]}),  # mm
    "wavelet": ("Wavelet", {}),  # pyradiomics default: coif1, start level 0, 1 level (8 decompositions)
}

#: |imaginary part| above this (relative to max(1, |real part|)) is logged as suspicious, not silently dropped.
IMAGINARY_RTOL = 1e-6


def shipped_params_path(name: str) -> Path:
    """Path of a shipped parameter file by modality (``"CT"``, ``"PET_FMISO"``) or file stem (``"IBSI"``)."""
    file = MODALITY_PARAMS.get(name.upper(), f"{name.upper()}.yaml")
    path = PARAMS_DIR / file
    if not path.is_file():
        known = sorted({*MODALITY_PARAMS, *(p.stem for p in PARAMS_DIR.glob("*.yaml"))})
        raise InputError(f"no shipped radiomics parameter file for {name!r}", fix=f"use one of {known}")
    return path


def load_params(path: Path | str, validate: bool = True) -> dict[str, Any]:
    """Read and (unless ``validate`` is false) validate a pyradiomics YAML or JSON parameter file.

    Bad files raise InputError. The shipped files are validated by the test suite, so they are loaded
    without validation (which would import pyradiomics in the main process for nothing).
    """
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read radiomics parameter file: {exc}", file=str(path)) from exc
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InputError("a pyradiomics parameter file must be a mapping", file=str(path))
    if not validate:
        return params
    try:
        validate_params(params)
    except InputError as exc:
        raise InputError(str(exc), file=str(path), fix="see pyradiomics' parameter file schema") from exc
    return params


def validate_params(params: Mapping[str, Any]) -> None:
    """Validate against pyradiomics' schema (raises InputError naming the problem)."""
    _extractor(canonical_json(params))


def params_for_modality(modality: str) -> dict[str, Any] | None:
    """Shipped parameters for an images.csv modality, or None for modalities without radiomics (DOSE)."""
    if modality.upper() not in MODALITY_PARAMS:
        return None
    return load_params(shipped_params_path(modality), validate=False)


def with_filters(params: Mapping[str, Any], filters: Sequence[str]) -> dict[str, Any]:
    """Copy of ``params`` whose ``imageType`` is exactly ``filters`` (names from FILTERS, any case).

    A filter already configured in ``params`` keeps its own arguments (e.g. a user's LoG sigmas).
    """
    if not filters:
        raise InputError("at least one radiomics filter is needed", fix=f"choose from {sorted(FILTERS)}")
    out = copy.deepcopy(dict(params))
    current = dict(out.get("imageType") or {})
    image_types: dict[str, Any] = {}
    for name in filters:
        key = name.strip().lower()
        if key not in FILTERS:
            raise InputError(f"unknown radiomics filter {name!r}", fix=f"choose from {sorted(FILTERS)}")
        pyrad_name, defaults = FILTERS[key]
        image_types[pyrad_name] = current.get(pyrad_name) or copy.deepcopy(defaults)
    out["imageType"] = image_types
    return out


def canonical_json(params: Mapping[str, Any]) -> str:
    """Stable text form of a parameter dictionary (sorted keys): used for hashing and caching."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


@functools.lru_cache(maxsize=16)
def _extractor(params_json: str) -> Any:
    """A validated pyradiomics extractor for canonical parameters (cached per process)."""
    import radiomics
    from radiomics import featureextractor

    # pyradiomics sets its logger to DEBUG and adds a stderr handler on import: quieten both, so that its
    # per-feature chatter neither prints nor propagates to the application's handlers.
    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    params = json.loads(params_json)
    try:
        extractor = featureextractor.RadiomicsFeatureExtractor(params)
    except Exception as exc:  # pykwalify.errors.SchemaError and friends
        msg = str(exc).replace("\n", " ").strip()
        raise InputError(f"invalid pyradiomics parameters: {msg[:400]}") from exc
    # diagnostics (image/mask hashes, connected components, ...) are discarded anyway: skip computing them.
    # This changes no feature value.
    extractor.settings["additionalInfo"] = False
    return extractor


@functools.lru_cache(maxsize=16)
def _box_extractor(params_json: str) -> Any:
    """The extractor of :func:`_extractor` for input already through
    :func:`radiogenomics.features.roi_crop.prepare_for_pyradiomics`: same features, filters, discretisation and
    re-segmentation; no normalisation, resampling or pre-cropping (they were done on the ROI's box)."""
    import copy as _copy

    from radiogenomics.features.roi_crop import preprocessed_settings

    extractor = _copy.deepcopy(_extractor(params_json))
    extractor.settings = preprocessed_settings(extractor.settings)
    return extractor


def to_real(value: Any, name: str = "feature") -> float:
    """A pyradiomics output as a Python float.

    pyradiomics computes principal axes with ``numpy.linalg.eigvals`` on a covariance matrix that is not
    bit-exactly symmetric; for near-spherical ROIs (repeated eigenvalues) the result is complex128 with a
    ~1e-16 imaginary part. The real part is the value; a large imaginary part is logged.
    """
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"{name}: expected a scalar feature value, got shape {arr.shape}")
    scalar = arr.reshape(()).item()
    if isinstance(scalar, complex):
        real, imag = scalar.real, scalar.imag
        if abs(imag) > IMAGINARY_RTOL * max(1.0, abs(real)):
            log.warning("%s: discarding a non-negligible imaginary part %g (real part %g)", name, imag, real)
        return float(real)
    if isinstance(scalar, bool | int | float | np.number):
        return float(scalar)
    raise ValueError(f"{name}: feature value {value!r} is not numeric")


def extract_radiomics(image: sitk.Image, mask: sitk.Image, params: Mapping[str, Any], *,
                      crop: bool = True) -> dict[str, float]:
    """pyradiomics features for one image and a binary (0/1) mask on its grid.

    Returns ``{pyradiomics key: float}`` without the ``diagnostics_*`` entries; keys look like
    ``original_firstorder_Mean``. Values are real (see :func:`to_real`); a feature pyradiomics could not
    compute is NaN.

    ``crop`` (default): pyradiomics' normalisation, mask checks and resampling are done on a box around the ROI
    (:mod:`radiogenomics.features.roi_crop`, our code instead of pyradiomics' ``loadImage``, because that
    prefilters and scans the whole image for every ROI); the features are those of the plain path
    (``crop=False``: the full image and mask straight into ``RadiomicsFeatureExtractor.execute``), which
    ``tests/test_features_crop.py`` checks feature by feature.
    """
    params_json = canonical_json(params)
    extractor = _extractor(params_json)
    settings = getattr(extractor, "settings", None)
    if crop and settings is not None:
        from radiogenomics.features.roi_crop import prepare_for_pyradiomics

        prepared = prepare_for_pyradiomics(image, mask, settings)
        if prepared is not None:
            image, mask = prepared
            extractor = _box_extractor(params_json)
    try:
        raw = extractor.execute(image, mask, label=1)
    except ValueError as exc:  # pyradiomics' checkMask: empty or too-small ROI, label not present
        raise InputError(f"pyradiomics rejected the ROI: {exc}") from exc
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key.startswith("diagnostics_"):
            continue
        real = to_real(value, key)
        out[key] = real if math.isfinite(real) else float("nan")
    return out
