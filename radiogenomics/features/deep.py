"""Deep imaging features: a MONAI 3D encoder pooled to one embedding per (patient, modality, ROI).

Pipeline of MONAI dictionary transforms on ``{"image", "mask"}``:

1. ``LoadCohortImaged``: read the image and the ROI mask with :mod:`radiogenomics.cohort` (NIfTI, NRRD,
   MHA, DICOM series, RTSTRUCT), as channel-first MetaTensors with their RAS affine;
2. ``Orientationd`` to RAS; 3. ``Spacingd`` to ``spacing_mm`` (bilinear image, nearest mask);
4. intensity scaling per modality (CT window in HU, PET window in SUV, MR z-score);
5. ``RoiBoxCropd``: a fixed box of ``box_voxels`` centred on the ROI's bounding box (zero-padded at the
   edges), so every embedding sees the same physical field of view.

Steps 3-5 are computed on the box only (:mod:`radiogenomics.features.deep_crop`: the same sample coordinates and
the same numbers as resampling the whole image, at the cost of the box); :func:`_preprocess_full` is the whole-image
reference.

The encoder is :class:`monai.networks.nets.ResNet` with image and mask as two input channels and
``feed_forward=False`` (global average pooling), giving ``block_inplanes[-1]`` features. No pretrained
weights are downloaded: weights come from a user checkpoint (see :func:`save_checkpoint`) or, by default, a
deterministic initialisation from ``seed`` (a fixed random projection of the ROI, reproducible on CPU).
CUDA is used when available.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

#: Intensity handling per modality: ("window", lo, hi) maps [lo, hi] to [0, 1] with clipping;
#: ("zscore",) normalises over the non-zero voxels.
INTENSITY: dict[str, tuple[Any, ...]] = {
    "CT": ("window", -200.0, 300.0),  # HU, soft-tissue window
    "PET_FDG": ("window", 0.0, 20.0),  # SUV
    "PET_FMISO": ("window", 0.0, 5.0),  # SUV (low tracer contrast)
    "MR_T1": ("zscore",),
    "MR_T2": ("zscore",),
    "MR_DWI": ("zscore",),
    "DOSE": ("window", 0.0, 80.0),  # Gy
}


@dataclass(frozen=True)
class DeepConfig:
    """Encoder and preprocessing settings; part of the cache key of every deep item."""

    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    box_voxels: tuple[int, int, int] = (48, 48, 48)
    layers: tuple[int, ...] = (1, 1, 1, 1)
    block_inplanes: tuple[int, ...] = (16, 32, 64, 128)
    seed: int = 0
    checkpoint: str | None = None
    intensity: dict[str, tuple[Any, ...]] = field(default_factory=lambda: dict(INTENSITY))

    @property
    def embedding_dim(self) -> int:
        return int(self.block_inplanes[-1])

    def to_params(self) -> dict[str, Any]:
        """JSON-safe dictionary (what a work item carries)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DeepConfig:
        p = dict(params)
        return cls(spacing_mm=tuple(p["spacing_mm"]), box_voxels=tuple(p["box_voxels"]),  # type: ignore[arg-type]
                   layers=tuple(p["layers"]), block_inplanes=tuple(p["block_inplanes"]), seed=int(p["seed"]),
                   checkpoint=p.get("checkpoint"),
                   intensity={k: tuple(v) for k, v in p.get("intensity", INTENSITY).items()})


def build_encoder(config: DeepConfig) -> Any:
    """The MONAI ResNet encoder (eval mode, on CUDA when available) with the configured weights."""
    import torch
    from monai.networks.nets import ResNet

    torch.manual_seed(config.seed)
    model = ResNet(block="basic", layers=list(config.layers), block_inplanes=list(config.block_inplanes),
                   spatial_dims=3, n_input_channels=2, conv1_t_size=3, conv1_t_stride=1, no_max_pool=False,
                   feed_forward=False)
    if config.checkpoint:
        path = Path(config.checkpoint)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(f"cannot load encoder checkpoint: {exc}", file=str(path)) from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"checkpoint does not fit the encoder: {str(exc)[:300]}", file=str(path),
                             fix="save it with radiogenomics.features.deep.save_checkpoint") from exc
    model.eval()
    return model.to(device())


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def save_checkpoint(model: Any, path: Path | str, config: DeepConfig) -> None:
    """Save encoder weights in the format :func:`build_encoder` loads (``{"state_dict", "config"}``)."""
    import torch

    torch.save({"state_dict": model.state_dict(), "config": config.to_params()}, str(path))


@lru_cache(maxsize=2)
def _encoder(config_json: str) -> Any:
    return build_encoder(DeepConfig.from_params(json.loads(config_json)))


def sitk_to_metatensor(image: sitk.Image) -> Any:
    """Channel-first MetaTensor (1, x, y, z) with the RAS affine of a SimpleITK (LPS) image."""
    from monai.data import MetaTensor

    array = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)[None]
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing(), dtype=np.float64)[None, :]
    affine[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    import torch

    return MetaTensor(array, affine=torch.as_tensor(affine, dtype=torch.float64))


def _transforms(config: DeepConfig, modality: str) -> Any:
    from monai.transforms import (
        Compose,
        MapTransform,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    class LoadCohortImaged(MapTransform):
        """Load ``image`` (a path) and ``mask`` ((path, roi, label)) with radiogenomics.cohort readers."""

        def __init__(self, patient_id: str, reader: Any = None) -> None:
            super().__init__(keys=["image", "mask"])
            self.patient_id = patient_id
            self.reader = reader

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            from radiogenomics.features.reader import PatientReader

            d = dict(data)
            reader = self.reader or PatientReader()  # the patient task's: each file decoded once per patient
            image = reader.image(str(d["image"]))
            mask_path, roi, label, *named = d["mask"]
            structure, aliases = (named + [None, ()])[:2]
            mask = reader.mask(str(mask_path), str(d["image"]), roi, label, patient_id=self.patient_id,
                               structure=structure or "", aliases=tuple(aliases or ()))
            d["image"], d["mask"] = sitk_to_metatensor(image), sitk_to_metatensor(mask)
            return d

    class RoiBoxCropd(MapTransform):
        """Crop a fixed box centred on the bounding box of ``mask`` (zero padding outside the image)."""

        def __init__(self, box: tuple[int, int, int]) -> None:
            super().__init__(keys=["image", "mask"])
            self.box = np.array(box, dtype=np.int64)

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            from monai.transforms import BorderPad, SpatialCrop

            d = dict(data)
            fg = np.argwhere(np.asarray(d["mask"][0]) > 0.5)
            if fg.size == 0:
                raise InputError("the ROI vanished after resampling (smaller than one voxel)")
            centre = (fg.min(axis=0) + fg.max(axis=0)) / 2.0
            start = np.floor(centre - (self.box - 1) / 2.0).astype(np.int64)
            shape = np.array(d["mask"].shape[1:], dtype=np.int64)
            before = np.maximum(0, -start)
            after = np.maximum(0, start + self.box - shape)
            pad = BorderPad(spatial_border=[int(v) for pair in zip(before, after, strict=True) for v in pair])
            crop = SpatialCrop(roi_start=(start + before).tolist(), roi_end=(start + before + self.box).tolist())
            for key in self.keys:
                d[key] = crop(pad(d[key]))
            return d

    scheme = config.intensity.get(modality, ("zscore",))
    intensity: MapTransform
    if scheme[0] == "window":
        intensity = ScaleIntensityRanged(keys="image", a_min=float(scheme[1]), a_max=float(scheme[2]),
                                         b_min=0.0, b_max=1.0, clip=True)
    else:
        intensity = NormalizeIntensityd(keys="image", nonzero=True)
    orientation = Orientationd(keys=["image", "mask"], axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    spacing = Spacingd(keys=["image", "mask"], pixdim=config.spacing_mm, mode=("bilinear", "nearest"))
    box = RoiBoxCropd(config.box_voxels)

    def run(data: Mapping[Hashable, Any], patient_id: str, reader: Any = None, full: bool = False) -> Any:
        import torch

        from radiogenomics.features.deep_crop import resample_box

        loaded = orientation(LoadCohortImaged(patient_id, reader)(data))
        if not full:  # the same numbers as the full path below, resampled on the box only
            x = resample_box(loaded, spacing, intensity, config.box_voxels)
            if x is not None:
                return x
        out = Compose([spacing, intensity, box])(loaded)
        return torch.cat([out["image"].as_tensor(), (out["mask"].as_tensor() > 0.5).float()], dim=0)

    return run


def preprocess(image: str, mask: str, roi: str, label: int, modality: str, config: DeepConfig,
               patient_id: str = "", *, structure: str | None = None, aliases: tuple[str, ...] = (),
               reader: Any = None) -> Any:
    """The encoder input: a (2, *box_voxels) float tensor, channels image and ROI mask (``roi`` is the role;
    ``structure`` and ``aliases`` as for :func:`radiogenomics.cohort.read_mask`; ``reader``: the patient task's
    :class:`radiogenomics.features.reader.PatientReader`, whose decoded files are reused)."""
    return _transforms(config, modality)({"image": image, "mask": (mask, roi, label, structure, aliases)},
                                         patient_id, reader)


def _preprocess_full(image: str, mask: str, roi: str, label: int, modality: str, config: DeepConfig,
                     patient_id: str = "", *, structure: str | None = None, aliases: tuple[str, ...] = (),
                     reader: Any = None) -> Any:
    """:func:`preprocess` by resampling the whole image and mask before cutting the box: the reference that
    :mod:`radiogenomics.features.deep_crop` reproduces bit for bit (``tests/test_features_deep_crop.py``)."""
    return _transforms(config, modality)({"image": image, "mask": (mask, roi, label, structure, aliases)},
                                         patient_id, reader, full=True)


def embed(inputs: Any, config: DeepConfig) -> np.ndarray:
    """Embeddings (n, embedding_dim) of a batch of encoder inputs (n, 2, *box)."""
    import torch

    model = _encoder(json.dumps(config.to_params(), sort_keys=True))
    with torch.no_grad():
        out = model(inputs.to(next(model.parameters()).device).float())
    return out.detach().cpu().numpy().astype(np.float64)


def embed_item(item: Any, reader: Any = None) -> dict[str, float]:
    """``{"0": ..., "1": ...}``: the embedding of one (patient, modality, ROI) work item (``reader``: the patient
    task's decoded images, see :func:`preprocess`)."""
    if item.mask is None:
        raise InputError("deep features need a ROI mask", patient_id=item.patient_id)
    config = DeepConfig.from_params(item.params)
    x = preprocess(item.image, item.mask, item.roi, item.label, item.modality, config, item.patient_id,
                   structure=item.structure or None, aliases=item.aliases, reader=reader)
    vector = embed(x[None], config)[0]
    return {str(i): float(v) for i, v in enumerate(vector)}
