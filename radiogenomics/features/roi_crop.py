"""Cut an image and its ROI mask down to what pyradiomics will actually look at, before it resamples them.

pyradiomics' ``loadImage`` (``featureextractor.py``) casts the whole mask to UInt32 and ``np.unique``-s it
(``imageoperations.getMask``), runs label statistics over the whole image and mask, and, with resampling on,
hands the *whole* image to SimpleITK's ``ResampleImageFilter``. With a B-spline interpolator ITK first computes
B-spline coefficients of the entire input (``BSplineDecompositionImageFilter``), although the output is only the
ROI's bounding box plus ``padDistance`` voxels. On a 512 x 512 x 150 CT that prefilter is most of an item's time,
repeated for every ROI.

:func:`prepare_for_pyradiomics` does the same preprocessing on a small box instead and returns an image and mask
that pyradiomics then takes as they are (resampling and pre-cropping switched off for that call):

1. the output grid is computed exactly as ``imageoperations.resampleImage`` computes it, from the geometry of
   the *full* mask (its index lattice, size limits and origin), so every output voxel sits where it would;
2. the input is cropped to the input voxels that grid can reach, plus a margin (:func:`resampling_margin`):
   the interpolation kernel's support, and for B-splines the reach of the recursive prefilter, whose influence
   falls as ``|z|^k`` with the distance ``k`` (``z`` the spline's pole, -0.268 for cubic) and is taken
   until it is below ``2**-64`` of a value, 11 bits below a double's rounding; beyond that the coefficients, and
   so the resampled voxels, are the same numbers (tests compare every feature with the plain full-image path);
3. the cropped image and mask are resampled with the same ``ResampleImageFilter`` settings as pyradiomics.

Filters (LoG, wavelet, ...) run afterwards inside pyradiomics on this resampled box, which is the box they get
in the plain path too, so they need no margin of their own here. Without resampling, ``preCrop: true`` crops to
the bounding box plus ``padDistance`` as pyradiomics does. With neither, the filters see the whole image in
pyradiomics (the wavelet wraps around periodically, so no margin would reproduce it): the image is left whole.
Anything this module does not reproduce exactly returns None and the caller uses the plain path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk

#: Poles of the B-spline prefilter per spline order (Unser 1999, table I); order 0-1 need no prefilter.
BSPLINE_POLES: dict[int, tuple[float, ...]] = {
    0: (), 1: (), 2: (math.sqrt(8.0) - 3.0,), 3: (math.sqrt(3.0) - 2.0,),
    4: (-0.361341225900220177092212841325, -0.013725429297339121360331226939),
    5: (-0.430575347099973791851434783493, -0.043096288203264653822712376823),
}
#: Relative influence below which a far voxel no longer changes a B-spline coefficient (11 bits below 2**-53).
PREFILTER_TOLERANCE = 2.0 ** -64

#: SimpleITK interpolator -> spline order (nearest 0, linear 1). Others (Gaussian, windowed sinc, ...) are
#: not reproduced here: the plain path handles them.
_ORDERS: dict[int, int] = {sitk.sitkNearestNeighbor: 0, sitk.sitkLinear: 1, sitk.sitkBSpline: 3}
for _order in range(1, 6):
    _ORDERS[getattr(sitk, f"sitkBSpline{_order}")] = _order
    _ORDERS[getattr(sitk, f"sitkBSplineResamplerOrder{_order}")] = _order
_ORDERS[sitk.sitkBSplineResampler] = 3

#: pyradiomics settings that change what its preprocessing does in ways this module does not reproduce.
_UNSUPPORTED = ("correctMask", "label_channel", "voxelBased")


def interpolator_code(value: Any) -> int | None:
    """pyradiomics' ``interpolator`` setting (a name such as ``"sitkBSpline"`` or a SimpleITK constant) as the
    SimpleITK constant, or None when unknown (pyradiomics would fall back to B-spline with a warning)."""
    if isinstance(value, str):
        code = getattr(sitk, value, None)
        return code if isinstance(code, int) else None
    return int(value) if isinstance(value, int) else None


def resampling_margin(interpolator: int) -> int | None:
    """Input voxels needed on each side of the region a resampled grid covers, for an exact result.

    The kernel's support (``ceil((order + 1) / 2)`` voxels for a spline of that order, 1 for nearest and linear)
    plus, for orders >= 2, the distance at which the prefilter's slowest pole has decayed below
    :data:`PREFILTER_TOLERANCE` (cubic: 34 voxels, so 36 in all). None for an interpolator not handled here.
    """
    order = _ORDERS.get(interpolator)
    if order is None:
        return None
    support = max(1, math.ceil((order + 1) / 2))
    poles = BSPLINE_POLES[order]
    reach = max((math.ceil(math.log(PREFILTER_TOLERANCE) / math.log(abs(z))) for z in poles), default=0)
    return support + reach


def mask_bounding_box(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """(lower index, size) of the non-zero voxels of a mask, in SimpleITK's (x, y, z) order; None when empty.
    Reductions along the axes of a view of the array: no label statistics filter over the whole volume."""
    array = sitk.GetArrayViewFromImage(mask)
    lower, upper = [], []
    for axis in range(array.ndim):
        other = tuple(a for a in range(array.ndim) if a != axis)
        hit = np.flatnonzero(array.any(axis=other))
        if hit.size == 0:
            return None
        lower.append(int(hit[0]))
        upper.append(int(hit[-1]))
    lo, hi = np.array(lower[::-1]), np.array(upper[::-1])  # numpy is (z, y, x)
    return lo, hi - lo + 1


def _crop(image: sitk.Image, lower: np.ndarray, upper: np.ndarray) -> sitk.Image:
    """Voxels ``lower..upper`` (inclusive, x-y-z) of an image, with its physical geometry kept."""
    return sitk.RegionOfInterest(image, [int(v) for v in upper - lower + 1], [int(v) for v in lower])


def prepare_for_pyradiomics(image: sitk.Image, mask: sitk.Image,
                            settings: Mapping[str, Any]) -> tuple[sitk.Image, sitk.Image] | None:
    """The (image, mask) pyradiomics' ``loadImage`` would produce from the full ``image`` and binary ``mask``
    (label 1, same grid) with ``settings``, computed on a box around the ROI; None when the plain path must run.

    The result is to be passed to pyradiomics with normalisation, resampling and pre-cropping switched off
    (:func:`preprocessed_settings`).
    """
    if any(settings.get(key) for key in _UNSUPPORTED) or image.GetDimension() != 3 \
            or mask.GetDimension() != 3 or int(settings.get("label", 1)) != 1:
        return None
    box = mask_bounding_box(mask)
    if box is None:
        return None  # pyradiomics raises its own error for an empty ROI
    bb_index, bb_size = box
    if settings.get("normalize", False):
        # whole-image statistics: pyradiomics' own function on the full image, before anything is cropped
        from radiomics import imageoperations

        image = imageoperations.normalizeImage(image, **settings)
    spacing_setting = settings.get("resampledPixelSpacing")
    interpolator = settings.get("interpolator")
    pad = int(settings.get("padDistance", 5))
    size = np.array(mask.GetSize())
    if interpolator is not None and spacing_setting is not None:
        code = interpolator_code(interpolator)
        margin = resampling_margin(code) if code is not None else None
        if code is None or margin is None or len(spacing_setting) != 3:
            return None
        return _resample_box(image, mask, bb_index, bb_size, np.array(spacing_setting, dtype=float), code,
                             margin, pad)
    if settings.get("preCrop", False):
        # imageoperations.cropToTumorMask with padDistance, on the bounding box
        lower = np.maximum(bb_index - pad, 0)
        upper = np.minimum(bb_index + bb_size - 1 + pad, size - 1)
        return _crop(image, lower, upper), sitk.Cast(_crop(mask, lower, upper), sitk.sitkUInt32)
    return None  # filters see the whole image in pyradiomics: nothing to crop without changing them


def _resample_box(image: sitk.Image, mask: sitk.Image, bb_index: np.ndarray, bb_size: np.ndarray,
                  spacing_setting: np.ndarray, interpolator: int, margin: int,
                  pad: int) -> tuple[sitk.Image, sitk.Image]:
    """``imageoperations.resampleImage`` (pyradiomics 3.1) for a full image and mask, reading only the box
    of input voxels its output grid needs (see the module docstring); the grid arithmetic is pyradiomics'."""
    mask_spacing = np.array(mask.GetSpacing())
    mask_size = np.array(mask.GetSize())
    new_spacing = np.where(spacing_setting == 0, mask_spacing, spacing_setting)
    new_spacing = np.where(bb_size != 1, new_spacing, mask_spacing)
    if np.allclose(np.array(image.GetSpacing()), new_spacing):
        # pyradiomics only crops then (after a nearest-neighbour resampling of the mask onto the image: identity)
        lower = np.maximum(bb_index - pad, 0)
        upper = np.minimum(bb_index + bb_size - 1 + pad, mask_size - 1)
        return _crop(image, lower, upper), sitk.Cast(_crop(mask, lower, upper), sitk.sitkUInt32)
    ratio = mask_spacing / new_spacing
    new_lower = np.floor((bb_index - 0.5) * ratio - pad)
    new_upper = np.ceil((bb_index + bb_size - 0.5) * ratio + pad)
    max_upper = np.ceil(mask_size * ratio) - 1
    new_lower = np.where(new_lower < 0, 0, new_lower)
    new_upper = np.where(new_upper > max_upper, max_upper, new_upper)
    new_size = np.array(new_upper - new_lower + 1, dtype="int").tolist()
    original_lower = new_lower / ratio
    origin_index = np.array(0.5 * (new_spacing - mask_spacing) / mask_spacing)
    new_origin = mask.TransformContinuousIndexToPhysicalPoint(origin_index + original_lower)
    direction = np.array(mask.GetDirection())

    # the input voxels the output grid reaches: its corners, as continuous indices of the (full) input
    out_dir = direction.reshape(3, 3)
    corners = []
    for corner in np.ndindex(2, 2, 2):
        steps = np.array(corner) * (np.array(new_size) - 1) * new_spacing
        point = np.array(new_origin) + out_dir @ steps
        corners.append(image.TransformPhysicalPointToContinuousIndex(point.tolist()))
    reach = np.array(corners)
    in_size = np.array(image.GetSize())
    lower = np.clip(np.floor(reach.min(axis=0)).astype(int) - margin, 0, in_size - 1)
    upper = np.clip(np.ceil(reach.max(axis=0)).astype(int) + margin, 0, in_size - 1)
    image_box = _crop(image, lower, upper)

    rif = sitk.ResampleImageFilter()
    rif.SetOutputSpacing(new_spacing.tolist())
    rif.SetOutputDirection(direction.tolist())
    rif.SetSize(new_size)
    rif.SetOutputOrigin(new_origin)
    rif.SetOutputPixelType(image.GetPixelID())
    rif.SetInterpolator(interpolator)
    resampled_image = rif.Execute(image_box)
    # The mask is resampled from the full mask: nearest-neighbour reads only the output voxels' input voxels (no
    # prefilter, no pass over the volume), and a cropped mask's origin, rounded differently in its last bit, can
    # move a sample lying exactly half-way between two voxels (e.g. 3 mm slices onto 2 mm) to the other one.
    # The output type is getMask's UInt32, the values (0/1) are the same.
    rif.SetOutputPixelType(sitk.sitkUInt32)
    rif.SetInterpolator(sitk.sitkNearestNeighbor)
    resampled_mask = rif.Execute(mask)
    return resampled_image, resampled_mask


def preprocessed_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """pyradiomics settings for an (image, mask) already through :func:`prepare_for_pyradiomics`: no
    normalisation, resampling or pre-cropping again; everything else (discretisation, re-segmentation, filters,
    feature classes) as given."""
    out = dict(settings)
    out["normalize"] = False
    out["resampledPixelSpacing"] = None
    out["preCrop"] = False
    return out
