"""The deep path's resampling, done only for the output voxels the fixed ROI box keeps.

:mod:`radiogenomics.features.deep` resamples image and mask to ``spacing_mm`` with MONAI's ``Spacingd`` and then
cuts a box of ``box_voxels`` centred on the ROI. At clinical size that resamples the whole PET or CT (a 128 x 128
x 60 PET becomes 349 x 349 x 187 voxels, with a float64 sampling grid of three coordinates per output voxel) to
keep 48^3 of it.

Cropping the *input* first gives different numbers: MONAI normalises the sampling grid by the input and output
sizes (``monai.networks.utils.to_norm_affine``), so a smaller input or output moves every sample position in its
last bits, and nearest-neighbour mask resampling at exact half-way points (3 mm slices onto 2 mm) flips voxels.
This module keeps the input and the full output grid as they are and evaluates only a block of it:

1. ``Spacingd`` runs *lazily* (MONAI's own code computes the output affine, the output shape and the index
   transform ``xform`` it would resample with, and records them as a pending operation without resampling);
2. the normalised ``theta`` is built from that ``xform`` with the same calls and the same dtype as
   ``monai.networks.layers.AffineTransform`` (``to_norm_affine`` on the full input and output sizes, then the
   reversed indexing);
3. :func:`affine_grid_block` builds the rows of ``torch.nn.functional.affine_grid`` for a block of output voxels:
   the same ``linspace`` of the *full* output size per axis, sliced, and the same ``bmm`` with ``theta``, so every
   coordinate is the number ``affine_grid`` computes for that voxel (``tests/test_features_deep_crop.py`` compares
   them bit for bit, and every embedding with the full path);
4. ``torch.nn.functional.grid_sample`` with those coordinates on the whole input, in the same dtype, mode, padding
   mode and ``align_corners``: each output voxel is computed from its own coordinate alone, so it is the same
   number as in the full resampling.

The box position comes from the resampled mask's bounding box, as in the full path: the mask is resampled (nearest
neighbour, the same way) on the block of output voxels whose sample points can fall within half a voxel of the
input ROI (:func:`_candidate_block`), which holds every resampled ROI voxel. Then image and mask are resampled on
the box, the intensity window is applied (element-wise, so the same on the box as on the whole image) and the box
is zero-padded where it leaves the output grid, as ``BorderPad`` does.

Not reproduced here, so :func:`resample_box` returns None and the caller runs the full path: a z-score intensity
scheme (its mean and standard deviation are taken over the whole resampled image), a Spacing that MONAI may treat
as "unchanged" (the image is already on the target grid: nothing to resample, it only copies), the compiled or
spline (integer order) resamplers, and image and mask with different output grids.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from radiogenomics.errors import InputError


def _linspace_from_neg_one(n: int, align_corners: bool, dtype: Any) -> Any:
    """ATen's ``linspace_from_neg_one`` (``AffineGridGenerator.cpp``): the normalised positions of ``n`` voxels,
    the same two rounded operations (``range * (n - 1) / n``) as in ``affine_grid``."""
    import torch

    values = torch.linspace(-1, 1, n, dtype=dtype)
    if not align_corners:
        values = values * (n - 1) / n
    return values


def affine_grid_block(theta: Any, size: tuple[int, int, int], block: tuple[slice, slice, slice],
                      align_corners: bool) -> Any:
    """Rows ``block`` (of the D, H, W output axes) of ``torch.nn.functional.affine_grid(theta, (1, 1, *size))``.

    ``affine_grid`` builds a base grid ``(x_w, y_h, z_d, 1)`` from one ``linspace`` per axis of the full size and
    multiplies it by ``theta`` transposed with ``bmm`` (``affine_grid_generator_5D``). Here the base grid holds
    only the block's rows, from the same full-size ``linspace`` values, and goes through the same ``bmm``, so each
    row is the same dot product of the same four numbers: the cost follows the block, not the output image.
    """
    import torch

    lin_d, lin_h, lin_w = (_linspace_from_neg_one(n, align_corners, theta.dtype)[s] for n, s in zip(size, block,
                                                                                                      strict=True))
    base = torch.empty((1, len(lin_d), len(lin_h), len(lin_w), 4), dtype=theta.dtype)
    base[..., 0] = lin_w
    base[..., 1] = lin_h[:, None]
    base[..., 2] = lin_d[:, None, None]
    base[..., 3] = 1.0
    grid = base.view(1, -1, 4).bmm(theta.transpose(1, 2))
    return grid.view(1, len(lin_d), len(lin_h), len(lin_w), 3)


class _Resampler:
    """One key's pending ``Spacing``: evaluates its output on blocks of the output grid."""

    def __init__(self, pending: Any) -> None:
        import torch
        from monai.config import USE_COMPILED
        from monai.networks.utils import to_norm_affine
        from monai.transforms.utils import resolves_modes
        from monai.utils import LazyAttr, TraceKeys, get_torch_dtype_from_string

        (op,) = pending.pending_operations
        info = op[TraceKeys.EXTRA_INFO]
        self.xform = op[LazyAttr.AFFINE].to(torch.float64)
        self.shape = tuple(int(v) for v in op[LazyAttr.SHAPE])
        self.in_shape = tuple(int(v) for v in pending.shape[1:])
        mode = info["mode"]
        align = info["align_corners"]
        self.align_corners = bool(align) if isinstance(align, bool) else False  # Spacing's default (TraceKeys.NONE)
        self.supported = (not USE_COMPILED and isinstance(mode, str) and pending.shape[0] == 1
                          and len(self.shape) == 3 and not self._maybe_unchanged())
        if not self.supported:
            return
        _, self.mode, self.padding_mode, _ = resolves_modes(mode, info["padding_mode"])
        # spatial_resample: img.to(dtype_pt); AffineTransform: theta = xform.to(img), normalised by the full input
        # and output sizes, then the reversed ("i, j, k" -> "D, H, W") indexing
        # (AffineTransform makes the input contiguous first: a copy of the whole input that grid_sample, which
        # reads through strides, does not need for the same values; the float64 copy it does need, as the grid's
        # dtype and the input size are part of the arithmetic)
        self.image = pending.as_tensor().to(get_torch_dtype_from_string(info["dtype"]))[None]
        theta = self.xform.to(self.image)[None].clone()
        theta = to_norm_affine(affine=theta, src_size=self.in_shape, dst_size=self.shape,
                               align_corners=self.align_corners, zero_centered=False)
        rev = torch.as_tensor([2, 1, 0])
        theta[:, :3] = theta[:, rev]
        theta[:, :, :3] = theta[:, :, rev]
        self.theta = theta[:, :3]

    def _maybe_unchanged(self) -> bool:
        """True where ``spatial_resample`` may skip resampling (same shape and ``xform`` within ``AFFINE_TOL`` of
        the identity, or source and destination affines that close): there it only converts to float32, which is
        what the full path then does at no real cost. Taken widely (0.5 instead of 1e-3) so no such case gets
        here."""
        import torch

        identity = torch.eye(4, dtype=torch.float64)
        return self.shape == self.in_shape and bool((self.xform - identity).abs().max() < 0.5)

    def block(self, lo: np.ndarray, hi: np.ndarray) -> Any:
        """The resampled output (1, *hi - lo) float32 on output voxels ``lo`` to ``hi`` (within the output)."""
        import torch

        block = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        grid = affine_grid_block(self.theta, self.shape, block, self.align_corners)  # type: ignore[arg-type]
        out = torch.nn.functional.grid_sample(self.image, grid, mode=self.mode, padding_mode=self.padding_mode,
                                              align_corners=self.align_corners)
        return out[0].to(torch.float32)


def _candidate_block(mask: _Resampler, fg_lo: np.ndarray, fg_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output voxels whose nearest-neighbour sample can land on an input ROI voxel (``fg_lo`` to ``fg_hi``
    inclusive): the output-index bounding box of the input box widened by one voxel (a sample within 0.5 of a ROI
    voxel centre), mapped through the inverse of ``xform`` (output index -> input index), plus one output voxel
    against rounding. With "border" padding an ROI on the input's edge is repeated outwards: then that side of the
    box extends to the output's edge."""
    out_shape = np.array(mask.shape, dtype=np.int64)
    inverse = np.linalg.inv(mask.xform.numpy())
    corners = np.array([[*c, 1.0] for c in itertools.product(*zip(fg_lo - 1.0, fg_hi + 1.0, strict=True))])
    out = (inverse @ corners.T)[:3]
    lo = np.maximum(np.floor(out.min(axis=1)).astype(np.int64) - 1, 0)
    hi = np.minimum(np.ceil(out.max(axis=1)).astype(np.int64) + 2, out_shape)
    if mask.padding_mode == "border" and (np.any(fg_lo == 0) or np.any(fg_hi == np.array(mask.in_shape) - 1)):
        lo, hi = np.zeros(3, dtype=np.int64), out_shape  # an oblique grid spreads the edge over every axis
    return lo, hi


def resample_box(data: Mapping[Hashable, Any], spacing: Any, intensity: Any, box: tuple[int, int, int]) -> Any:
    """The encoder input (2, *box) of the full path (``spacing``, ``intensity``, then the ROI box), computed on the
    box only; None where this module does not reproduce the full path (see the module docstring).

    ``data``: ``{"image", "mask"}`` oriented MetaTensors (after ``Orientationd``); ``spacing``: the full path's
    ``Spacingd``; ``intensity``: its intensity transform (a ``ScaleIntensityRanged``; anything else: None).
    """
    import torch
    from monai.transforms import ScaleIntensityRanged

    if not isinstance(intensity, ScaleIntensityRanged):
        return None
    pending = spacing(dict(data), lazy=True)
    image, mask = _Resampler(pending["image"]), _Resampler(pending["mask"])
    if not (image.supported and mask.supported) or image.shape != mask.shape:
        return None
    fg_in = np.argwhere(np.asarray(data["mask"][0]) > 0.5)
    if fg_in.size == 0:
        raise InputError("the ROI vanished after resampling (smaller than one voxel)")
    lo, hi = _candidate_block(mask, fg_in.min(axis=0), fg_in.max(axis=0))
    fg = np.argwhere(np.asarray(mask.block(lo, hi)[0]) > 0.5)
    if fg.size == 0:
        raise InputError("the ROI vanished after resampling (smaller than one voxel)")
    # RoiBoxCropd's arithmetic on the same (full output) indices
    box_arr = np.array(box, dtype=np.int64)
    centre = (fg.min(axis=0) + lo + fg.max(axis=0) + lo) / 2.0
    start = np.floor(centre - (box_arr - 1) / 2.0).astype(np.int64)
    shape = np.array(mask.shape, dtype=np.int64)
    b_lo, b_hi = np.maximum(start, 0), np.minimum(start + box_arr, shape)
    at = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(b_lo, b_hi, start, strict=True))
    out = torch.zeros((2, *box), dtype=torch.float32)
    if np.all(b_hi > b_lo):
        scaled = intensity({"image": image.block(b_lo, b_hi)})["image"]
        out[0][at] = torch.as_tensor(scaled)[0]
        out[1][at] = (mask.block(b_lo, b_hi)[0] > 0.5).float()
    return out
