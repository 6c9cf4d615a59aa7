"""An independent cohort with a second FMISO/FDG PET after K fractions, for the adaptive acceptance test (issue 19).

Written from the contract (§1 cohort folder, §8 timepoints) and docs/cohort-format.md ("Timepoints") only: it
never imports or reads ``radiogenomics.synthetic``. numpy, scipy, pandas and SimpleITK.

Every patient lies on one 24^3 grid of 4 mm voxels (non-zero origin, identity direction): CT in HU, one uint8 label
map (GTV 1, Parotid_L 2, Parotid_R 3, Spinal_Cord 4) shared by the CT and both PET, FDG and FMISO PET (SUV) at
planning, and a planned DOSE grid (the patient's prescription of patients.csv to the GTV, falling off outside it;
the cord well inside its limit, the parotids near theirs). The ten RSI genes are written in the same within-sample
order for every patient (noise far below the spacing between genes), so every patient has the same measured RSI and
the same baseline prescription: the dose-response patients differ in their anatomy and true reoxygenation only.

FMISO is built from two parts, ``uptake = (tissue + H) * noise``: ``tissue`` the reference level (1.0 SUV in soft
tissue, 0.05 in air), ``H >= 0`` the tumour's hypoxic excess (a 0.2 floor in the GTV plus a Gaussian core of peak
1.0, i.e. a TBR up to ~2.2), ``noise`` a fixed multiplicative field. The mid-treatment FMISO is
``(tissue + (1 - r) H) * noise`` with the same noise field: r = 0 is the planning image itself (identical hypoxia),
r = 1 puts the tumour at the reference tissue's level (fully oxic). The mid-treatment FDG keeps 75 % of the tumour's
excess uptake for every patient (the same metabolic response whatever r), so that only FMISO differs with r.

``truth.csv`` (beside the cohort folder, never inside it) keeps r and this module's own reading of each image with
the documented FMISO -> pO2 defaults (docs/radiobiology.md "Imaging maps": U_oxic 1, U_anoxic 3, K 2.5 mmHg, cap
60 mmHg; hypoxic = pO2 < 10 mmHg) on the uptake ratio to the reference tissue, taken as docs/serving.md "The dose
map" defines it (median uptake outside the GTV of the voxels at >= 1/4 of the GTV's median uptake).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

SIZE = (24, 24, 24)                 # x, y, z voxels
SPACING = (4.0, 4.0, 4.0)           # mm
ORIGIN = (-46.0, -38.0, 112.0)      # mm, non-zero
LABELS = {"GTV": 1, "Parotid_L": 2, "Parotid_R": 3, "Spinal_Cord": 4}
K_FRACTIONS = 10
RX_GY, N_FX = 70.0, 35

#: one within-sample order of the ten RSI genes (low -> high expression): RSI 0.397 for every patient (Eschrich
#: rank score), i.e. 71.4 Gy at 2 Gy per fraction for a target GARD of 33, inside the head-and-neck rails.
RSI_ORDER = ("PRKCB", "HDAC1", "RELA", "JUN", "CDK1", "ABL1", "IRF1", "STAT1", "AR", "SUMO1")
OTHER_GENES = ("GAPDH", "ACTB", "NDRG1", "BNIP3", "SLC2A1", "TGFB1", "ATM", "XRCC1", "CA9", "VEGFA")

# FMISO -> pO2 defaults of docs/radiobiology.md ("Imaging maps", unverified defaults)
U_OXIC, U_ANOXIC, K_MMHG, PO2_MAX = 1.0, 3.0, 2.5, 60.0
HYPOXIC_MMHG = 10.0


@dataclass(frozen=True)
class Spec:
    """One patient. ``mid``: ``"r"`` (mid-treatment FMISO/FDG with reoxygenation r), ``"no_uptake"`` (a mid-treatment
    FMISO without any uptake in or next to the tumour), ``"elsewhere"`` (a mid-treatment FMISO on a grid 300 mm away
    that does not overlap the planning grid), ``"none"`` (no mid-treatment imaging). The mid-treatment FDG of the
    two implausible cases is the usual one."""

    patient_id: str
    r: float
    mid: str = "r"
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gtv_radius_mm: float = 15.0
    core_sigma_mm: float = 6.0
    delivered: tuple[int, float] | None = None      # patients.csv delivered_n_fractions, delivered_dose_gy


def _image(array_zyx: np.ndarray, origin: tuple[float, ...] = ORIGIN) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(SPACING)
    img.SetOrigin(origin)
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def _write(array_zyx: np.ndarray, path: Path, origin: tuple[float, ...] = ORIGIN) -> None:
    sitk.WriteImage(_image(array_zyx, origin), str(path), useCompression=True)


def coords() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical x, y, z (mm) of every voxel centre, arrays indexed [z, y, x]."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in SIZE[::-1]), indexing="ij")
    return ORIGIN[0] + i * SPACING[0], ORIGIN[1] + j * SPACING[1], ORIGIN[2] + k * SPACING[2]


def _centre() -> np.ndarray:
    return np.asarray(ORIGIN) + (np.asarray(SIZE) - 1) / 2 * np.asarray(SPACING)


def _anatomy(spec: Spec) -> dict[str, np.ndarray]:
    x, y, z = coords()
    cx, cy, cz = _centre()
    body = ((x - cx) / 44.0) ** 2 + ((y - cy) / 44.0) ** 2 <= 1.0
    g = _centre() + np.array([-4.0, -6.0, 0.0]) + np.asarray(spec.shift_mm)
    rad = spec.gtv_radius_mm
    r2 = ((x - g[0]) / rad) ** 2 + ((y - g[1]) / (0.85 * rad)) ** 2 + ((z - g[2]) / (1.1 * rad)) ** 2
    gtv = (r2 <= 1.0 + 0.1 * np.cos(x / 6.0) * np.cos(z / 7.0)) & body
    out = {"body": body, "GTV": gtv}
    for name, side in (("Parotid_L", 1.0), ("Parotid_R", -1.0)):
        p = _centre() + np.array([side * 30.0, 8.0, 4.0])
        out[name] = (((x - p[0]) / 7.0) ** 2 + ((y - p[1]) / 9.0) ** 2 + ((z - p[2]) / 11.0) ** 2 <= 1.0) & ~gtv
    rho = np.hypot(x - cx, y - cy - 30.0)     # the cord >= 14 mm behind the GTV: far inside its limit
    out["Spinal_Cord"] = rho <= 4.5
    out["vertebra"] = (rho > 6.0) & (rho <= 11.0)
    out["gtv_centre"] = g
    return out


def _ct(m: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    hu = np.full(m["body"].shape, -1000.0)
    hu[m["body"]] = 25.0
    hu[m["vertebra"]] = 650.0
    hu[m["Spinal_Cord"]] = 35.0
    hu[m["Parotid_L"] | m["Parotid_R"]] = -40.0
    hu[m["GTV"]] = 50.0
    hu = ndimage.gaussian_filter(hu, 0.5) + rng.normal(0.0, 8.0, hu.shape)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def _fdg(m: dict[str, np.ndarray], noise: np.ndarray, tumour_scale: float) -> np.ndarray:
    x = coords()[0]
    base = np.where(m["body"], 1.0, 0.03)
    base = np.where(m["Parotid_L"] | m["Parotid_R"], 1.8, base)
    excess = np.where(m["GTV"], 6.0 + 2.0 * np.tanh((x - m["gtv_centre"][0]) / 8.0), 0.0)
    return ndimage.gaussian_filter(base + tumour_scale * excess, 0.6) * noise


def _fmiso_parts(m: dict[str, np.ndarray], spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """(tissue, hypoxic excess H), both smoothed by the same PET point-spread function."""
    x, y, z = coords()
    tissue = np.where(m["body"], 1.0, 0.05)
    h = m["gtv_centre"] + np.array([3.0, 2.0, 0.0])
    core = np.exp(-((x - h[0]) ** 2 + (y - h[1]) ** 2 + (z - h[2]) ** 2) / (2 * spec.core_sigma_mm ** 2))
    excess = np.where(m["GTV"], 0.2 + 1.0 * core, 0.0)
    return ndimage.gaussian_filter(tissue, 0.6), ndimage.gaussian_filter(excess, 0.6)


def _dose(m: dict[str, np.ndarray]) -> np.ndarray:
    """Planned dose for RX_GY: the prescription inside the GTV + 4 mm, falling off exponentially (18 mm)."""
    distance = ndimage.distance_transform_edt(~m["GTV"], sampling=SPACING[::-1])
    dose = RX_GY * np.exp(-np.maximum(distance - 4.0, 0.0) / 18.0)
    return np.where(m["body"], dose, 0.3 * dose).astype(np.float32)


def _expression(rng: np.random.Generator) -> dict[str, float]:
    values = {g: round(5.0 + 0.8 * k + float(rng.normal(0, 0.05)), 4) for k, g in enumerate(RSI_ORDER)}
    values.update({g: round(7.0 + float(rng.normal(0, 0.6)), 4) for g in OTHER_GENES})
    return values


def fmiso_reading(uptake: np.ndarray, gtv: np.ndarray) -> dict[str, float]:
    """This module's own reading of an FMISO image in the GTV with the documented defaults."""
    outside = uptake[~gtv]
    reference = float(np.median(outside[outside >= 0.25 * np.median(uptake[gtv])]))
    tbr = uptake[gtv] / reference
    with np.errstate(divide="ignore", invalid="ignore"):
        po2 = np.where(tbr <= U_OXIC, PO2_MAX,
                       np.clip(K_MMHG * (U_ANOXIC - tbr) / (tbr - U_OXIC), 0.0, PO2_MAX))
    return {"reference_suv": reference, "tbr_max": float(tbr.max()), "mean_po2_mmhg": float(po2.mean()),
            "hypoxic_fraction": float(np.mean(po2 < HYPOXIC_MMHG))}


def default_specs() -> tuple[Spec, ...]:
    """Eight dose-response patients (r from 0 to 1, anatomy varied), two implausible mid-treatment images, one
    patient without mid-treatment imaging, one with patients.csv delivered_* (19 Gy in 10 fractions)."""
    response = (
        Spec("ADP-001", 0.0, shift_mm=(0.0, 0.0, 0.0), gtv_radius_mm=15.0, core_sigma_mm=6.0),
        Spec("ADP-002", 0.1, shift_mm=(4.0, -2.0, 4.0), gtv_radius_mm=16.0, core_sigma_mm=6.5),
        Spec("ADP-003", 0.2, shift_mm=(-4.0, 2.0, -4.0), gtv_radius_mm=14.0, core_sigma_mm=5.5),
        Spec("ADP-004", 0.3, shift_mm=(2.0, 4.0, 0.0), gtv_radius_mm=15.0, core_sigma_mm=6.0),
        Spec("ADP-005", 0.45, shift_mm=(-2.0, -4.0, 4.0), gtv_radius_mm=16.0, core_sigma_mm=6.0),
        Spec("ADP-006", 0.6, shift_mm=(0.0, 2.0, -4.0), gtv_radius_mm=14.5, core_sigma_mm=5.5),
        Spec("ADP-007", 0.8, shift_mm=(4.0, 0.0, -2.0), gtv_radius_mm=15.5, core_sigma_mm=6.5),
        Spec("ADP-008", 1.0, shift_mm=(-4.0, 0.0, 2.0), gtv_radius_mm=15.0, core_sigma_mm=6.0),
    )
    return (*response,
            Spec("ADP-009", 0.0, mid="no_uptake"),
            Spec("ADP-010", 0.5, mid="elsewhere", shift_mm=(2.0, 2.0, 0.0)),
            Spec("ADP-011", 0.5, mid="none", shift_mm=(-2.0, 0.0, 2.0)),
            Spec("ADP-012", 0.45, shift_mm=(0.0, -2.0, 2.0), delivered=(K_FRACTIONS, 19.0)))


def simulate_adaptive_cohort(folder: Path, site: str, specs: tuple[Spec, ...] | None = None, seed: int = 19
                             ) -> pd.DataFrame:
    """Write the cohort to ``folder`` (which must not exist); return the truth table (one row per patient)."""
    specs = default_specs() if specs is None else specs
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "cohort.yaml").write_text("name: adaptive acceptance cohort\ndescription: independent simulator, "
                                        "second FMISO/FDG PET after 10 fractions\nformat_version: 1\n")
    fx = f"fraction_{K_FRACTIONS}"
    patients, images, expression, truth = [], [], [], []
    elsewhere = (ORIGIN[0] + 300.0, ORIGIN[1], ORIGIN[2])
    for n, spec in enumerate(specs):
        rng = np.random.default_rng([seed, n])
        pid = spec.patient_id
        rel = Path("images") / pid
        pdir = folder / rel
        pdir.mkdir(parents=True)
        m = _anatomy(spec)
        _write(_ct(m, rng), pdir / "ct.nii.gz")
        labels = np.zeros(m["body"].shape, np.uint8)
        for name, value in LABELS.items():
            labels[m[name]] = value
        _write(labels, pdir / "labels.nii.gz")
        noise = np.exp(ndimage.gaussian_filter(rng.normal(0.0, 0.06, labels.shape), 0.5))
        fdg_noise = np.exp(ndimage.gaussian_filter(rng.normal(0.0, 0.06, labels.shape), 0.5))
        tissue, excess = _fmiso_parts(m, spec)
        fmiso = ((tissue + excess) * noise).astype(np.float32)
        fmiso_mid = ((tissue + (1.0 - spec.r) * excess) * noise).astype(np.float32)
        fdg = _fdg(m, fdg_noise, 1.0).astype(np.float32)
        fdg_mid = _fdg(m, fdg_noise, 0.75).astype(np.float32)
        _write(fmiso, pdir / "pet_fmiso.nii.gz")
        _write(fdg, pdir / "pet_fdg.nii.gz")
        _write(_dose(m), pdir / "dose.nii.gz")
        for modality, file in (("CT", "ct"), ("PET_FDG", "pet_fdg"), ("PET_FMISO", "pet_fmiso")):
            for roi, value in LABELS.items():
                images.append({"patient_id": pid, "modality": modality, "image": f"{rel}/{file}.nii.gz",
                               "mask": f"{rel}/labels.nii.gz", "roi": roi, "label": value, "timepoint": ""})
        images.append({"patient_id": pid, "modality": "DOSE", "image": f"{rel}/dose.nii.gz", "mask": "",
                       "roi": "", "label": "", "timepoint": ""})
        gtv = labels == LABELS["GTV"]
        before = fmiso_reading(fmiso, gtv)
        now: dict[str, float] = {}
        if spec.mid != "none":
            # the implausible cases spoil the FMISO only (the image that changes the course); the FDG is as usual
            fmiso_labels, fmiso_origin = "labels.nii.gz", ORIGIN
            if spec.mid == "no_uptake":     # a failed acquisition: no uptake inside (or next to) the tumour
                hole = ndimage.binary_dilation(gtv, iterations=1)
                fmiso_mid = np.where(hole, 0.0, fmiso).astype(np.float32)
            elif spec.mid == "elsewhere":   # another frame of reference: 300 mm away, no overlap
                fmiso_origin, fmiso_labels = elsewhere, "labels_fx.nii.gz"
                _write(labels, pdir / fmiso_labels, fmiso_origin)
            _write(fmiso_mid, pdir / "pet_fmiso_fx.nii.gz", fmiso_origin)
            _write(fdg_mid, pdir / "pet_fdg_fx.nii.gz")
            for modality, file, mask in (("PET_FDG", "pet_fdg_fx", "labels.nii.gz"),
                                         ("PET_FMISO", "pet_fmiso_fx", fmiso_labels)):
                images.append({"patient_id": pid, "modality": modality, "image": f"{rel}/{file}.nii.gz",
                               "mask": f"{rel}/{mask}", "roi": "GTV", "label": LABELS["GTV"], "timepoint": fx})
            if spec.mid == "r":
                now = fmiso_reading(fmiso_mid, gtv)
        row = {"patient_id": pid, "site": site, "center": "ADA", "age_years": round(float(rng.normal(61, 7)), 1),
               "sex": str(rng.choice(["F", "M"])), "hpv": "neg", "t_stage": "T3", "total_dose_gy": RX_GY,
               "n_fractions": N_FX}
        if spec.delivered is not None:
            row["delivered_n_fractions"], row["delivered_dose_gy"] = spec.delivered
        patients.append(row)
        expression.append({"patient_id": pid, **_expression(rng)})
        truth.append({"patient_id": pid, "r": spec.r, "mid": spec.mid, "delivered": spec.delivered,
                      "gtv_cc": float(gtv.sum()) * np.prod(SPACING) / 1000.0,
                      **{f"before_{k}": v for k, v in before.items()},
                      **{f"now_{k}": v for k, v in now.items()}})
    table = pd.DataFrame(patients)
    for column in ("delivered_n_fractions",):
        if column in table:
            table[column] = table[column].astype("Int64")
    table.to_csv(folder / "patients.csv", index=False)
    pd.DataFrame(images).to_csv(folder / "images.csv", index=False)
    pd.DataFrame(expression).to_csv(folder / "expression.csv", index=False)
    return pd.DataFrame(truth).set_index("patient_id")
