"""A small head-and-neck cohort for the planning acceptance test, written from the contract (cohort format v1).

Independent of ``radiogenomics.synthetic`` and of ``tests/independent_simulator.py`` (which has no spinal cord):
numpy, scipy, pandas and SimpleITK only. Each patient has, on an anisotropic CT grid with a non-zero origin
(52 x 48 x 36 voxels of 2.5 x 2.5 x 3 mm):

* a CT in HU: air, an elliptic soft-tissue neck, a vertebral body (bone) around the spinal canal, an air way;
* one uint8 label map for GTV (1), Parotid_L (2), Parotid_R (3) (``label`` column), and the spinal cord as its
  own binary mask file (``SpinalCord``), so that the cord can overlap the GTV when a test needs it to;
* optionally FDG and FMISO PET (SUV) on a coarser PET grid of their own (4 mm), with the GTV mask on that grid;
* patients.csv (head_neck, 70 Gy / 35 fractions) and expression.csv (the ten RSI genes and a few others).

No DOSE image and no dvh.csv: the hand-off cannot check the OAR limits (``oar_unchecked``); the planning stage
checks them (contract §2, "Without a dose distribution").
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

CT_SIZE = (52, 48, 36)            # x, y, z voxels
CT_SPACING = (2.5, 2.5, 3.0)      # mm
CT_ORIGIN = (-61.25, -44.0, 120.0)
PET_SPACING = (4.0, 4.0, 4.0)
LABELS = {"GTV": 1, "Parotid_L": 2, "Parotid_R": 3}

RSI_GENES = ("AR", "JUN", "STAT1", "PRKCB", "RELA", "ABL1", "SUMO1", "CDK1", "HDAC1", "IRF1")
OTHER_GENES = ("GAPDH", "ACTB", "NDRG1", "BNIP3", "SLC2A1", "TGFB1", "ATM", "XRCC1")


@dataclass(frozen=True)
class PatientSpec:
    patient_id: str
    pet: bool                   # FDG and FMISO PET
    gtv_shift_mm: tuple[float, float, float]


@dataclass
class PlanningCohort:
    folder: Path
    patients: tuple[PatientSpec, ...]


def _image(array_zyx: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...]) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection((1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    return img


def _coords(size: tuple[int, int, int], spacing: tuple[float, ...], origin: tuple[float, ...]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical x, y, z (mm) of every voxel centre, arrays indexed [z, y, x] (identity direction)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    return (origin[0] + i * spacing[0], origin[1] + j * spacing[1], origin[2] + k * spacing[2])


def _centre() -> np.ndarray:
    return np.asarray(CT_ORIGIN) + (np.asarray(CT_SIZE) - 1) / 2 * np.asarray(CT_SPACING)


def _pet_grid() -> tuple[tuple[int, int, int], tuple[float, ...]]:
    extent = np.asarray(CT_SIZE) * np.asarray(CT_SPACING)
    size = tuple(int(np.ceil(e / s)) for e, s in zip(extent, PET_SPACING, strict=True))
    origin = _centre() - (np.asarray(size) - 1) / 2 * np.asarray(PET_SPACING)
    return size, tuple(float(o) for o in origin)  # type: ignore[return-value]


def _anatomy(x: np.ndarray, y: np.ndarray, z: np.ndarray, shift: tuple[float, float, float]
             ) -> dict[str, np.ndarray]:
    c = _centre()
    cx, cy, cz = c
    body = ((x - cx) / 58.0) ** 2 + ((y - cy - 2.0) / 50.0) ** 2 <= 1.0
    g = c + np.array([-6.0, -8.0, 0.0]) + np.asarray(shift)
    r2 = ((x - g[0]) / 14.0) ** 2 + ((y - g[1]) / 12.0) ** 2 + ((z - g[2]) / 15.0) ** 2
    lobe = ((x - g[0] - 7.0) / 8.0) ** 2 + ((y - g[1] + 6.0) / 7.0) ** 2 + ((z - g[2] - 5.0) / 9.0) ** 2
    gtv = (np.minimum(r2, lobe) <= 1.0 + 0.12 * np.cos(x / 5.0) * np.cos(z / 6.0)) & body
    parotids = {}
    for name, side in (("Parotid_L", 1.0), ("Parotid_R", -1.0)):
        p = c + np.array([side * 37.0, 6.0, 6.0])
        parotids[name] = (((x - p[0]) / 9.0) ** 2 + ((y - p[1]) / 11.0) ** 2 + ((z - p[2]) / 14.0) ** 2 <= 1.0) & ~gtv
    cord_axis = (cx, cy + 30.0)
    rho = np.hypot(x - cord_axis[0], y - cord_axis[1])
    cord = rho <= 5.0
    vertebra = (rho > 6.5) & (rho <= 15.0)
    airway = np.hypot(x - cx - 12.0, y - cy + 26.0) <= 6.0
    return {"body": body, "GTV": gtv, **parotids, "SpinalCord": cord, "vertebra": vertebra, "airway": airway}


#: a baseline order of the ten RSI genes (low -> high expression), ABL1 (the largest coefficient) sixth; each
#: patient swaps two genes of it, which puts its RSI at 0.37-0.41 (recommended doses inside the 60-80 Gy rails
#: for a target GARD of 33).
_BASE_ORDER = ("PRKCB", "HDAC1", "RELA", "JUN", "CDK1", "ABL1", "IRF1", "SUMO1", "AR", "STAT1")
_SWAPS = (("JUN", "HDAC1"), ("JUN", "PRKCB"), ("STAT1", "SUMO1"), ("AR", "HDAC1"))


def _expression(rng: np.random.Generator, swap: tuple[str, str]) -> dict[str, float]:
    order = list(_BASE_ORDER)
    i, j = order.index(swap[0]), order.index(swap[1])
    order[i], order[j] = order[j], order[i]
    values = {g: round(5.0 + 0.8 * k + float(rng.normal(0, 0.1)), 4) for k, g in enumerate(order)}
    for g in OTHER_GENES:
        values[g] = round(7.0 + float(rng.normal(0, 0.8)), 4)
    return values


def simulate_planning_cohort(folder: Path, seed: int = 5) -> PlanningCohort:
    """Write four patients: PLA-001 and PLA-003 with FDG and FMISO PET, PLA-002 and PLA-004 without PET."""
    specs = (PatientSpec("PLA-001", True, (0.0, 0.0, 0.0)), PatientSpec("PLA-002", False, (4.0, -3.0, 3.0)),
             PatientSpec("PLA-003", True, (-3.0, 2.0, -3.0)), PatientSpec("PLA-004", False, (2.0, 0.0, 0.0)))
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "cohort.yaml").write_text("name: planning acceptance cohort\nformat_version: 1\n")
    patients, images, expression = [], [], []
    x, y, z = _coords(CT_SIZE, CT_SPACING, CT_ORIGIN)
    pet_size, pet_origin = _pet_grid()
    px, py, pz = _coords(pet_size, PET_SPACING, pet_origin)
    for n, spec in enumerate(specs):
        rng = np.random.default_rng([seed, n])
        pdir = folder / "images" / spec.patient_id
        pdir.mkdir(parents=True)
        m = _anatomy(x, y, z, spec.gtv_shift_mm)
        hu = np.full(m["body"].shape, -1000.0)
        hu[m["body"]] = 25.0
        hu[m["vertebra"]] = 700.0
        hu[m["SpinalCord"]] = 35.0
        hu[m["airway"]] = -950.0
        hu[m["Parotid_L"] | m["Parotid_R"]] = -30.0
        hu[m["GTV"]] = 55.0
        hu = ndimage.gaussian_filter(hu, 0.5) + rng.normal(0, 8.0, hu.shape)
        sitk.WriteImage(_image(np.clip(np.rint(hu), -1024, 3071).astype(np.int16), CT_SPACING, CT_ORIGIN),
                        str(pdir / "ct.nii.gz"), useCompression=True)
        labels = np.zeros(hu.shape, np.uint8)
        for name, value in LABELS.items():
            labels[m[name]] = value
        sitk.WriteImage(_image(labels, CT_SPACING, CT_ORIGIN), str(pdir / "labels.nii.gz"), useCompression=True)
        sitk.WriteImage(_image(m["SpinalCord"].astype(np.uint8), CT_SPACING, CT_ORIGIN),
                        str(pdir / "cord.nii.gz"), useCompression=True)
        ct_file = f"images/{spec.patient_id}/ct.nii.gz"
        for name, value in LABELS.items():
            images.append({"patient_id": spec.patient_id, "modality": "CT", "image": ct_file,
                           "mask": f"images/{spec.patient_id}/labels.nii.gz", "roi": name, "label": value})
        images.append({"patient_id": spec.patient_id, "modality": "CT", "image": ct_file,
                       "mask": f"images/{spec.patient_id}/cord.nii.gz", "roi": "SpinalCord", "label": 1})
        if spec.pet:
            pm = _anatomy(px, py, pz, spec.gtv_shift_mm)
            g = _centre() + np.array([-6.0, -8.0, 0.0]) + np.asarray(spec.gtv_shift_mm)
            fdg = np.zeros(pm["body"].shape)
            fdg[pm["body"]] = 0.9
            fdg[pm["Parotid_L"] | pm["Parotid_R"]] = 1.7
            # FDG rises towards one side of the GTV (clonogen density gradient)
            fdg[pm["GTV"]] = 7.0 + 3.0 * np.tanh((px[pm["GTV"]] - g[0]) / 8.0)
            fdg = ndimage.gaussian_filter(fdg, 0.7) * rng.lognormal(0, 0.05, fdg.shape)
            fmiso = np.zeros(pm["body"].shape)
            fmiso[pm["body"]] = 1.0
            hypoxic = pm["GTV"] & (np.hypot(px - g[0] - 4.0, py - g[1]) <= 6.0)
            fmiso[pm["GTV"]] = 1.3
            fmiso[hypoxic] = 2.6
            fmiso = ndimage.gaussian_filter(fmiso, 0.7) * rng.lognormal(0, 0.05, fmiso.shape)
            for modality, values in (("PET_FDG", fdg), ("PET_FMISO", fmiso)):
                name = modality.lower()
                sitk.WriteImage(_image(values.astype(np.float32), PET_SPACING, pet_origin),
                                str(pdir / f"{name}.nii.gz"), useCompression=True)
                images.append({"patient_id": spec.patient_id, "modality": modality,
                               "image": f"images/{spec.patient_id}/{name}.nii.gz",
                               "mask": f"images/{spec.patient_id}/{name}_gtv.nii.gz", "roi": "GTV", "label": 1})
                sitk.WriteImage(_image(pm["GTV"].astype(np.uint8), PET_SPACING, pet_origin),
                                str(pdir / f"{name}_gtv.nii.gz"), useCompression=True)
        patients.append({"patient_id": spec.patient_id, "site": "head_neck", "center": "ACC",
                         "age_years": round(float(rng.normal(60, 8)), 1), "sex": str(rng.choice(["F", "M"])),
                         "hpv": "neg", "t_stage": "T3", "total_dose_gy": 70.0, "n_fractions": 35,
                         "lc_months": 24.0, "lc_event": 0, "tox_xerostomia": int(rng.integers(0, 3))})
        expression.append({"patient_id": spec.patient_id, **_expression(rng, _SWAPS[n])})
    pd.DataFrame(patients).to_csv(folder / "patients.csv", index=False)
    pd.DataFrame(images).to_csv(folder / "images.csv", index=False)
    pd.DataFrame(expression).to_csv(folder / "expression.csv", index=False)
    return PlanningCohort(folder, specs)


def copy_with_cord_through_gtv(source: Path, target: Path, patient_id: str) -> None:
    """Copy the cohort and rewrite ``patient_id``'s cord mask: a rod (radius 4 mm, the whole z extent) through
    the middle (centroid in x and y) of its GTV."""
    shutil.copytree(source, target)
    images = pd.read_csv(target / "images.csv")
    rows = images[(images["patient_id"] == patient_id) & (images["modality"] == "CT")]
    gtv_row = rows[rows["roi"] == "GTV"].iloc[0]
    cord_row = rows[rows["roi"] == "SpinalCord"].iloc[0]
    labels = sitk.ReadImage(str(target / gtv_row["mask"]))
    gtv = sitk.GetArrayFromImage(labels) == int(gtv_row["label"])
    x, y, _ = _coords(labels.GetSize(), labels.GetSpacing(), labels.GetOrigin())
    cx, cy = float(x[gtv].mean()), float(y[gtv].mean())
    rod = np.hypot(x - cx, y - cy) <= 4.0
    cord_path = target / cord_row["mask"]
    cord = _image(rod.astype(np.uint8), labels.GetSpacing(), labels.GetOrigin())
    sitk.WriteImage(cord, str(cord_path), useCompression=True)
