"""A small head-and-neck cohort writer for the safety-gate acceptance test (issue 15).

Written from the contract (§1, cohort format v1) and docs/cohort-format.md only; it shares no code with
``radiogenomics.synthetic`` or ``tests/independent_simulator.py``. Only numpy, scipy, pandas and SimpleITK are
used. Every patient is described by a :class:`PatientSpec`; the cohort gets

* ``patients.csv`` (site, centre, age, sex, HPV, T stage, the patient's own regimen, ``tox_xerostomia``);
* one CT per patient (NIfTI, 28 x 28 x 16 voxels of 2 x 2 x 2.5 mm) with a binary GTV mask; the CT and GTV are
  a deterministic function of ``image_seed`` and ``signal``, so two patients with the same pair have byte-identical
  images (a new patient can borrow a training patient's anatomy);
* ``expression.csv`` with the ten RSI genes, drawn so that Eschrich's rank score (IJROBP 2009;75:489, coefficients
  as tabulated in docs/radiobiology.md) is close to ``rsi_target``;
* the dose: ``dvh.csv`` bins (``dose="dvh"``) or a DOSE grid on the CT grid plus masks of the organs at risk
  (``dose="grid"``) or nothing (``dose=None``). The spinal cord's maximum is ``cord_fraction`` x the planned
  prescription (``total_dose_gy``), uniform over the cord, and each parotid's mean is ``parotid_fraction`` x it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

#: Eschrich et al., IJROBP 2009;75:489 (rank model, no intercept); docs/radiobiology.md.
RSI_COEFFICIENTS: dict[str, float] = {
    "AR": -0.00980092741843779, "JUN": 0.0128282697929755, "STAT1": 0.0254552046046931,
    "PRKCB": -0.00175888592095915, "RELA": -0.00381713588908642, "ABL1": 0.107021274358643,
    "SUMO1": -0.00025093287356907, "CDK1": -0.00924314364533049, "HDAC1": -0.020446868981449,
    "IRF1": -0.0441682719957224,
}
GENES = tuple(RSI_COEFFICIENTS)
SIZE = (28, 28, 16)                      # x, y, z voxels
SPACING = (2.0, 2.0, 2.5)                # mm
ORIGIN = (-27.0, -27.0, -18.75)          # mm: the grid is centred on (0, 0, 0)
# Organ centres (mm) and sizes: parotids lateral, the cord posterior, the GTV near the centre.
PAROTID_CENTRES = {"Parotid_L": (17.0, 4.0, 0.0), "Parotid_R": (-17.0, 4.0, 0.0)}
PAROTID_RADII_MM = (4.5, 5.5, 7.0)
CORD_CENTRE_XY = (0.0, 17.0)
CORD_RADIUS_MM = 3.5
DVH_BIN_GY = 0.1


@dataclass(frozen=True)
class PatientSpec:
    """One patient of a written cohort; ``None`` leaves a patients.csv cell blank."""

    patient_id: str
    site: str = "head_neck"
    center: str = "CA"
    age_years: float | None = 60.0
    sex: str = "M"
    hpv: str = "neg"
    t_stage: str = "T2"
    total_dose_gy: float | None = 70.0
    n_fractions: int | None = 35
    tox_xerostomia: int | None = None
    rsi_target: float | None = 0.4       # None: no expression row
    image_seed: int = 0
    signal: float = 0.0                  # imaging signal (tumour density rises with it)
    dose: str | None = "dvh"             # "dvh", "grid" or None
    cord_fraction: float = 0.5           # cord maximum / planned prescription
    parotid_fraction: float = 0.3        # each parotid's mean dose / planned prescription


def rsi_from_expression(values: dict[str, float]) -> float:
    """Eschrich's RSI: sum of coefficient x within-sample rank (1 = lowest; ties averaged) of the ten genes."""
    order = np.argsort(np.argsort([values[g] for g in GENES], kind="stable"), kind="stable") + 1
    return float(sum(RSI_COEFFICIENTS[g] * float(r) for g, r in zip(GENES, order, strict=True)))


def expression_for_rsi(target: float, seed: int, tries: int = 6000) -> dict[str, float]:
    """Log2 expression of the ten genes (distinct values, 4..12) whose rank score is closest to ``target``."""
    rng = np.random.default_rng([seed, 991])
    best: tuple[float, np.ndarray] | None = None
    coef = np.array([RSI_COEFFICIENTS[g] for g in GENES])
    for _ in range(tries):
        ranks = rng.permutation(10) + 1
        score = float(coef @ ranks)
        if best is None or abs(score - target) < abs(best[0] - target):
            best = (score, ranks)
    assert best is not None
    levels = np.round(4.0 + 0.8 * (best[1] - 1) + rng.uniform(-0.2, 0.2, 10), 4)
    return {g: float(v) for g, v in zip(GENES, levels, strict=True)}


def _coords() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical x, y, z (mm) of every voxel centre, arrays indexed [z, y, x]."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in SIZE[::-1]), indexing="ij")
    return (ORIGIN[0] + i * SPACING[0], ORIGIN[1] + j * SPACING[1], ORIGIN[2] + k * SPACING[2])


def _image(array_zyx: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    return img


def anatomy(image_seed: int) -> dict[str, np.ndarray]:
    """Boolean masks [z, y, x]: body, GTV (two overlapping ellipsoids), parotids, spinal cord."""
    rng = np.random.default_rng([image_seed, 17])
    x, y, z = _coords()
    centre = np.array([rng.normal(0, 1.5), -4.0 + rng.normal(0, 1.5), rng.normal(0, 1.5)])
    radii = rng.uniform(6.5, 9.0, 3)
    gtv = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2 <= 1
    lobe = centre + rng.normal(0, 3.0, 3)
    gtv |= ((x - lobe[0]) ** 2 + (y - lobe[1]) ** 2 + (z - lobe[2]) ** 2) <= rng.uniform(4.0, 6.0) ** 2
    masks = {"GTV": gtv, "body": (x / 26.0) ** 2 + (y / 25.0) ** 2 <= 1.0}
    for name, c in PAROTID_CENTRES.items():
        r = PAROTID_RADII_MM
        masks[name] = (((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1) & ~gtv
    masks["spinal_cord"] = ((x - CORD_CENTRE_XY[0]) ** 2 + (y - CORD_CENTRE_XY[1]) ** 2) <= CORD_RADIUS_MM ** 2
    return masks


def ct_hu(image_seed: int, signal: float) -> np.ndarray:
    """CT in HU [z, y, x]: air, soft tissue, parotids slightly fatty, the tumour denser with ``signal``."""
    masks = anatomy(image_seed)
    rng = np.random.default_rng([image_seed, 29, int(round(signal * 1000)) + 100000])
    hu = np.full(SIZE[::-1], -1000.0)
    hu[masks["body"]] = 30.0
    hu[masks["Parotid_L"] | masks["Parotid_R"]] = -25.0
    hu[masks["spinal_cord"]] = 38.0
    hu[masks["GTV"]] = 45.0 + 15.0 * signal
    hu = ndimage.gaussian_filter(hu, 0.7) + rng.normal(0, 10.0, hu.shape)
    hu[masks["GTV"]] += rng.normal(0, 6.0 + 2.0 * abs(signal), int(masks["GTV"].sum()))
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def dose_grid(spec: PatientSpec) -> np.ndarray:
    """A dose grid (Gy) on the CT grid: Rx in the GTV, fall-off outside; exact, uniform OAR doses."""
    assert spec.total_dose_gy is not None
    rx = float(spec.total_dose_gy)
    masks = anatomy(spec.image_seed)
    dist = ndimage.distance_transform_edt(~masks["GTV"], sampling=SPACING[::-1])
    dose = rx * np.exp(-np.clip(dist - 2.0, 0.0, None) / 10.0)
    struct = ndimage.generate_binary_structure(3, 1)
    for name in ("Parotid_L", "Parotid_R"):
        dose[ndimage.binary_dilation(masks[name], struct, 1) & ~masks["GTV"]] = spec.parotid_fraction * rx
    dose[ndimage.binary_dilation(masks["spinal_cord"], struct, 1)] = spec.cord_fraction * rx
    return dose.astype(np.float32)


def _centre_bin(value_gy: float) -> float:
    """The centre of the DVH_BIN_GY-wide bin (bins from 0 Gy) that holds ``value_gy``."""
    return round((math.floor(value_gy / DVH_BIN_GY + 1e-9) + 0.5) * DVH_BIN_GY, 4)


def dvh_rows(spec: PatientSpec) -> list[tuple[str, str, float, float]]:
    """Differential DVH bins: GTV at Rx, parotids centred on their mean, the cord just below its maximum."""
    assert spec.total_dose_gy is not None
    rx = float(spec.total_dose_gy)
    rows: list[tuple[str, str, float, float]] = []
    top = _centre_bin(rx)
    rows += [(spec.patient_id, "GTV", round(top - k * DVH_BIN_GY, 4), vol) for k, vol in ((2, 2.0), (1, 6.0),
                                                                                         (0, 12.0))]
    mid = _centre_bin(spec.parotid_fraction * rx)
    for name in ("Parotid_L", "Parotid_R"):
        rows += [(spec.patient_id, name, round(mid + k * DVH_BIN_GY, 4), 5.0) for k in (-1, 0, 1)]
    cmax = _centre_bin(spec.cord_fraction * rx)
    rows += [(spec.patient_id, "spinal_cord", round(cmax - k * DVH_BIN_GY, 4), vol)
             for k, vol in ((2, 3.0), (1, 2.0), (0, 1.0))]
    return rows


def write_cohort(folder: Path, specs: list[PatientSpec], *, name: str) -> Path:
    """Write ``specs`` as a cohort in format v1 under ``folder`` (which must not exist); return the folder."""
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "cohort.yaml").write_text(f"name: {name}\nformat_version: 1\n")
    patients, images, expression, dvh = [], [], [], []
    for spec in specs:
        pdir = folder / "images" / spec.patient_id
        pdir.mkdir(parents=True)
        masks = anatomy(spec.image_seed)
        ct_file = pdir / "ct.nii.gz"
        sitk.WriteImage(_image(ct_hu(spec.image_seed, spec.signal)), str(ct_file), useCompression=True)
        rois = ["GTV"] + (["Parotid_L", "Parotid_R", "spinal_cord"] if spec.dose == "grid" else [])
        for roi in rois:
            mfile = pdir / f"mask_{roi.lower()}.nii.gz"
            sitk.WriteImage(_image(masks[roi].astype(np.uint8)), str(mfile), useCompression=True)
            images.append({"patient_id": spec.patient_id, "modality": "CT",
                           "image": ct_file.relative_to(folder).as_posix(),
                           "mask": mfile.relative_to(folder).as_posix(), "roi": roi, "label": 1})
        if spec.dose == "grid":
            dfile = pdir / "dose.nii.gz"
            sitk.WriteImage(_image(dose_grid(spec)), str(dfile), useCompression=True)
            images.append({"patient_id": spec.patient_id, "modality": "DOSE",
                           "image": dfile.relative_to(folder).as_posix(), "mask": "", "roi": "", "label": ""})
        elif spec.dose == "dvh":
            dvh += dvh_rows(spec)
        if spec.rsi_target is not None:
            seed = int.from_bytes(spec.patient_id.encode()[-6:].rjust(6, b"0"), "big") % (2**31)
            expression.append({"patient_id": spec.patient_id, **expression_for_rsi(spec.rsi_target, seed)})
        patients.append({
            "patient_id": spec.patient_id, "site": spec.site, "center": spec.center, "age_years": spec.age_years,
            "sex": spec.sex, "hpv": spec.hpv, "t_stage": spec.t_stage, "total_dose_gy": spec.total_dose_gy,
            "n_fractions": spec.n_fractions, "tox_xerostomia": spec.tox_xerostomia,
        })
    table = pd.DataFrame(patients)
    table["n_fractions"] = table["n_fractions"].astype("Int64")
    table["tox_xerostomia"] = table["tox_xerostomia"].astype("Int64")
    if table["tox_xerostomia"].isna().all():
        table = table.drop(columns=["tox_xerostomia"])
    table.to_csv(folder / "patients.csv", index=False)
    pd.DataFrame(images, columns=["patient_id", "modality", "image", "mask", "roi", "label"]).to_csv(
        folder / "images.csv", index=False)
    if expression:
        pd.DataFrame(expression, columns=["patient_id", *GENES]).to_csv(folder / "expression.csv", index=False)
    if dvh:
        pd.DataFrame(dvh, columns=["patient_id", "structure", "dose_gy", "volume_cc"]).to_csv(
            folder / "dvh.csv", index=False)
    return folder


# (total dose, fractions) of the training cohort: 1.8, 2.0 and 2.2 Gy per fraction
TRAINING_REGIMENS = ((63.0, 35), (70.0, 35), (66.0, 33), (66.0, 30), (60.0, 30))


def training_specs(n_patients: int, seed: int, prefix: str) -> list[PatientSpec]:
    """A training cohort: RSI 0.2-0.7 (imaging signal follows it), cord 30-97 % and parotids 15-70 % of Rx,
    xerostomia grade >= 2 when the mean parotid dose is above about 30 Gy, two centres."""
    rng = np.random.default_rng([seed, 5])
    specs = []
    for i in range(n_patients):
        rsi = float(0.2 + 0.5 * (i + rng.uniform(0, 1)) / n_patients)
        total, n_fx = TRAINING_REGIMENS[i % len(TRAINING_REGIMENS)]
        parotid = float(rng.uniform(0.15, 0.7))
        mean_parotid = parotid * total
        grade_ge2 = mean_parotid + rng.normal(0, 6.0) > 30.0
        specs.append(PatientSpec(
            patient_id=f"{prefix}{i:03d}", center=("CA", "CB")[i % 2], age_years=round(float(rng.uniform(42, 78)), 1),
            sex=("F", "M")[int(rng.integers(2))], hpv=("pos", "neg", "unknown")[int(rng.integers(3))],
            t_stage=("T1", "T2", "T3", "T4a")[int(rng.integers(4))], total_dose_gy=total, n_fractions=n_fx,
            tox_xerostomia=int(rng.choice([2, 3])) if grade_ge2 else int(rng.choice([0, 1])),
            rsi_target=None if i % 11 == 5 else rsi, image_seed=1000 * seed + i,
            signal=round(float((rsi - 0.45) / 0.15 + rng.normal(0, 0.3)), 3), dose="dvh",
            cord_fraction=round(float(0.30 + 0.67 * ((i * 7) % n_patients) / max(n_patients - 1, 1)), 3),
            parotid_fraction=round(parotid, 3)))
    return specs
