"""An independent head-and-neck cohort simulator, written from the contract (cohort format v1) and the user docs only.

It shares no code and no convention with ``radiogenomics.synthetic`` (never imported, never read), so a convention
that our own generator and our models share cannot hide a bug in the acceptance test of issue 8
(``tests/test_acceptance_models.py``). Only numpy, scipy, pandas and SimpleITK are used.

How it differs from the docs' examples and a typical in-house generator:

* three centres with different scanners: anisotropic voxels (1.2 x 0.9 x 3 mm, 1.0 x 1.0 x 2.5 mm,
  0.8 x 1.1 x 3 mm), non-cubic grids, non-zero origins, one centre with a flipped (LPS-style) direction matrix;
* NIfTI (``.nii.gz`` and uncompressed ``.nii``), NRRD and MetaImage (``.mha``) files; one centre writes one label
  map per patient (``label`` column), the others binary masks;
* PET on its own coarser grid (masks evaluated on that grid), CT in HU with air, body and a bony ring;
* irregular tumours (unions of randomly oriented ellipsoids with a low-frequency surface perturbation);
* ROI names in TG-263 form (``Parotid_L``, ``Parotid_R``); dose from a DOSE grid (two centres) or from ``dvh.csv``
  only (one centre);
* some patients without PET, a few without expression, one with a blank RSI gene, an unknown extra clinical
  column, and optionally one broken patient (a truncated NIfTI or a mask on another grid).

The known signal: the tumour's FDG SUV and CT density rise with the patient's true RSI (plus patient-level
noise), and P(xerostomia grade >= 2) rises with the mean parotid dose (logistic in Gy). The true RSI is the
Eschrich et al. (IJROBP 2009;75:489) rank score of the expression this module draws, recomputed here from the
published coefficients; it is known also for patients whose expression is withheld from the cohort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage
from scipy.special import expit
from scipy.stats import rankdata

#: Eschrich et al., IJROBP 2009;75:489 (rank model, no intercept), coefficients as tabulated in
#: docs/radiobiology.md; high RSI = radioresistant.
RSI_COEFFICIENTS: dict[str, float] = {
    "AR": -0.00980092741843779, "JUN": 0.0128282697929755, "STAT1": 0.0254552046046931,
    "PRKCB": -0.00175888592095915, "RELA": -0.00381713588908642, "ABL1": 0.107021274358643,
    "SUMO1": -0.00025093287356907, "CDK1": -0.00924314364533049, "HDAC1": -0.020446868981449,
    "IRF1": -0.0441682719957224,
}
#: other genes of the expression table: hypoxia (Toustrup 2011) and toxicity candidate genes named in
#: docs/features.md, plus housekeeping genes and PAK2 (never mapped here).
OTHER_GENES = ("ADM", "ALDOA", "ALDOC", "ANKRD37", "BNIP3", "BNIP3L", "FAM162A", "KCTD11", "LOX", "NDRG1", "P4HA1",
               "P4HA2", "PDK1", "PFKFB3", "SLC2A1", "ATM", "TGFB1", "XRCC1", "XRCC3", "SOD2", "TNF", "GAPDH", "ACTB",
               "PAK2")

#: P(xerostomia grade >= 2) = expit((mean parotid dose - D50) / k): a steep, known dose response.
XERO_D50_GY = 38.0
XERO_K_GY = 4.0


@dataclass(frozen=True)
class Centre:
    """One acquiring centre: its CT grid, PET grid, file format and how it delivers dose."""

    name: str
    ct_size: tuple[int, int, int]
    ct_spacing_mm: tuple[float, float, float]
    pet_spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    flipped: bool          # direction diag(-1, -1, 1): index axes run against the physical ones
    suffix: str            # image file suffix
    label_map: bool        # one label map per patient (GTV 1, Parotid_L 2, Parotid_R 3) instead of binary masks
    dose: str              # "grid" (a DOSE image) or "dvh" (dvh.csv only)


CENTRES = (
    Centre("KRK", (40, 36, 24), (1.2, 0.9, 3.0), (2.4, 1.8, 3.0), (-23.4, 101.7, -512.0), False, ".nii.gz", False,
           "grid"),
    Centre("OSL", (44, 40, 28), (1.0, 1.0, 2.5), (2.0, 2.0, 5.0), (12.5, -40.0, 85.0), True, ".nrrd", True, "grid"),
    Centre("LIM", (52, 30, 24), (0.8, 1.1, 3.0), (3.2, 2.2, 3.0), (-300.0, 7.5, 0.0), False, ".mha", False, "dvh"),
)


@dataclass
class Grid:
    """A voxel grid and the physical coordinates (mm) of its voxel centres, arrays indexed [z, y, x]."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Physical x, y, z (mm) of every voxel centre."""
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        k, j, i = np.meshgrid(*(np.arange(n) for n in self.size[::-1]), indexing="ij")
        idx = np.stack([i * self.spacing[0], j * self.spacing[1], k * self.spacing[2]], axis=-1)
        phys = idx @ d.T + np.asarray(self.origin)
        return phys[..., 0], phys[..., 1], phys[..., 2]

    def centre(self) -> np.ndarray:
        """Physical position (mm) of the grid's geometric centre."""
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        half = (np.asarray(self.size) - 1) / 2 * np.asarray(self.spacing)
        return np.asarray(self.origin) + d @ half

    def image(self, array_zyx: np.ndarray) -> sitk.Image:
        """A SimpleITK image of this grid holding ``array_zyx``."""
        img = sitk.GetImageFromArray(array_zyx)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


def _direction(flipped: bool) -> tuple[float, ...]:
    return (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0) if flipped else (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)


def _pet_grid(centre: Centre, ct: Grid) -> Grid:
    """PET covers the CT's field of view with coarser voxels and its own origin."""
    extent = np.asarray(ct.size) * np.asarray(ct.spacing)
    size = tuple(int(math.ceil(e / s)) for e, s in zip(extent, centre.pet_spacing_mm, strict=True))
    # centre the PET grid on the CT grid's centre
    d = np.asarray(ct.direction).reshape(3, 3)
    half = (np.asarray(size) - 1) / 2 * np.asarray(centre.pet_spacing_mm)
    origin = ct.centre() - d @ half
    return Grid(size, centre.pet_spacing_mm, tuple(float(o) for o in origin), ct.direction)  # type: ignore[arg-type]


def rsi_from_expression(values: dict[str, float]) -> float:
    """Eschrich's RSI: sum of coefficient x within-sample rank (1 = lowest, ties averaged) of the ten genes."""
    genes = list(RSI_COEFFICIENTS)
    ranks = rankdata([values[g] for g in genes], method="average")
    return float(sum(RSI_COEFFICIENTS[g] * r for g, r in zip(genes, ranks, strict=True)))


#: baseline order (low -> high log2 expression) of the nine RSI genes other than ABL1; ABL1, the gene with the
#: largest coefficient, moves through them with the latent radioresistance z, so RSI lies mostly in 0.1..0.65.
_BASELINE_ORDER = ("PRKCB", "HDAC1", "RELA", "JUN", "CDK1", "IRF1", "SUMO1", "AR", "STAT1")


def _expression(rng: np.random.Generator) -> tuple[dict[str, float], float]:
    """Draw one patient's log2 expression and its latent radioresistance z (N(0, 1)).

    The nine other RSI genes keep a noisy baseline order (0.8 log2 units apart); ABL1 = 8.2 + z (+ noise), so
    its within-sample rank, and with it the rank score, rises with z.
    """
    z = float(rng.normal())
    values = {g: 5.0 + 0.8 * k + rng.normal(0, 0.35) for k, g in enumerate(_BASELINE_ORDER)}
    values["ABL1"] = 8.2 + z + rng.normal(0, 0.2)
    out = {g: round(float(values[g]), 4) for g in RSI_COEFFICIENTS}
    for g in OTHER_GENES:
        out[g] = round(float(7.0 + rng.normal(0, 1.0)), 4)
    return out, z


def _blob(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray, rng: np.random.Generator,
          radius_mm: float) -> np.ndarray:
    """Implicit irregular tumour: union of 3 rotated ellipsoids, surface perturbed by low-frequency cosines."""
    parts = []
    for k in range(3):
        c = centre + (rng.normal(0, radius_mm * 0.35, 3) if k else 0.0)
        radii = radius_mm * rng.uniform(0.55, 1.0, 3) * (1.0 if k == 0 else 0.75)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        rel = np.stack([x - c[0], y - c[1], z - c[2]], axis=-1) @ q
        parts.append(((rel / radii) ** 2).sum(axis=-1))
    r2 = np.minimum.reduce(parts)
    phase = rng.uniform(0, 2 * np.pi, 3)
    wobble = 0.18 * (np.cos(x / 4.0 + phase[0]) * np.cos(y / 5.0 + phase[1]) + 0.5 * np.cos(z / 6.0 + phase[2]))
    return r2 <= 1.0 + wobble


def _ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, c: np.ndarray, radii: tuple[float, float, float]
               ) -> np.ndarray:
    return ((x - c[0]) / radii[0]) ** 2 + ((y - c[1]) / radii[1]) ** 2 + ((z - c[2]) / radii[2]) ** 2 <= 1.0


@dataclass
class _Anatomy:
    gtv_centre: np.ndarray
    gtv_radius_mm: float
    gtv_seed: int
    parotid_centres: tuple[np.ndarray, np.ndarray]
    body_radii: tuple[float, float]

    def masks(self, grid: Grid) -> dict[str, np.ndarray]:
        x, y, z = grid.coords()
        gtv = _blob(x, y, z, self.gtv_centre, np.random.default_rng(self.gtv_seed), self.gtv_radius_mm)
        out = {"GTV": gtv}
        for name, c in zip(("Parotid_L", "Parotid_R"), self.parotid_centres, strict=True):
            out[name] = _ellipsoid(x, y, z, c, (4.5, 5.0, 7.0)) & ~gtv
        c = self.gtv_centre
        out["body"] = ((x - c[0]) / self.body_radii[0]) ** 2 + ((y - c[1]) / self.body_radii[1]) ** 2 <= 1.0
        return out


def _dose_gy(grid: Grid, anatomy: _Anatomy, rx_gy: float, falloff_mm: float) -> np.ndarray:
    """A smooth dose field: Rx inside the GTV's 3 mm margin, exponential fall-off with distance outside it."""
    gtv = anatomy.masks(grid)["GTV"]
    dist = ndimage.distance_transform_edt(~gtv, sampling=grid.spacing[::-1])
    dose = rx_gy * np.exp(-np.clip(dist - 3.0, 0.0, None) / falloff_mm)
    return ndimage.gaussian_filter(dose, 0.7).astype(np.float32)


def _differential_dvh(dose: np.ndarray, mask: np.ndarray, voxel_cc: float, bin_gy: float = 0.5
                      ) -> list[tuple[float, float]]:
    """Differential DVH bins (dose at the bin centre, volume in cc), empty bins left out."""
    d = dose[mask]
    edges = np.arange(0.0, float(d.max()) + 2 * bin_gy, bin_gy)
    counts, _ = np.histogram(d, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    return [(round(float(c), 3), round(float(n * voxel_cc), 5)) for c, n in zip(centres, counts, strict=True) if n]


@dataclass
class SimulatedCohort:
    """Paths and the latent truth of a written cohort (truth never goes into the cohort folder)."""

    folder: Path
    truth: pd.DataFrame      # patient_id, centre, true_rsi, z, has_expression, has_pet, mean_parotid_dose_gy, ...
    broken_patient: str | None
    broken_file: str | None


def simulate_cohort(folder: Path, n_patients: int, seed: int, *, prefix: str = "HN",
                    no_expression_fraction: float = 0.12, no_pet_fraction: float = 0.2,
                    broken: str | None = "truncated_nifti") -> SimulatedCohort:
    """Write a cohort in format v1 to ``folder``; return its latent truth.

    ``broken``: ``"truncated_nifti"`` (one patient's CT cut to half its bytes), ``"mask_grid"`` (one patient's
    GTV mask written on a grid with other spacing) or None.
    """
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "cohort.yaml").write_text(f"name: independent simulator seed {seed}\nformat_version: 1\n")
    patients, images, expression, dvh_rows, truth = [], [], [], [], []
    broken_idx = 3 if broken else -1
    broken_file = None
    for i in range(n_patients):
        pid = f"{prefix}{seed:02d}-{i:03d}"
        prng = np.random.default_rng([seed, i])
        centre = CENTRES[i % len(CENTRES)]
        ct = Grid(centre.ct_size, centre.ct_spacing_mm, centre.origin_mm, _direction(centre.flipped))
        pet = _pet_grid(centre, ct)
        values, z = _expression(prng)
        true_rsi = rsi_from_expression(values)
        # anatomy: GTV near the centre, parotids lateral at a patient-specific distance (drives the dose)
        c0 = ct.centre() + prng.normal(0, 2.0, 3) * np.array([1.0, 1.0, 0.5])
        lateral = prng.uniform(8.0, 16.0)
        anatomy = _Anatomy(c0, float(prng.uniform(6.0, 8.5)), int(prng.integers(2**31)),
                           (c0 + np.array([-lateral, 4.0, 0.0]), c0 + np.array([lateral, 4.0, 0.0])),
                           (min(ct.size[0] * ct.spacing[0], 60.0) * 0.48, ct.size[1] * ct.spacing[1] * 0.47))
        n_fx = int(prng.choice([35, 33, 30]))
        rx_gy = {35: 70.0, 33: 66.0, 30: 60.0}[n_fx]
        falloff_mm = float(prng.uniform(5.0, 14.0))
        # imaging signal: a noisy monotone function of the true RSI (patient-level noise, SNR about 3)
        signal = (true_rsi - 0.35) / 0.15 + prng.normal(0, 0.35)
        ct_masks = anatomy.masks(ct)
        x, y, _ = ct.coords()
        hu = np.full(ct.size[::-1], -1000.0)
        hu[ct_masks["body"]] = 35.0
        ring = ct_masks["body"] & ~(((x - c0[0]) / (anatomy.body_radii[0] - 3)) ** 2
                                    + ((y - c0[1]) / (anatomy.body_radii[1] - 3)) ** 2 <= 1.0)
        hu[ring] = 650.0
        hu[ct_masks["Parotid_L"] | ct_masks["Parotid_R"]] = -20.0
        hu[ct_masks["GTV"]] = 45.0 + 14.0 * signal
        hu = ndimage.gaussian_filter(hu, 0.6) + prng.normal(0, 12.0, hu.shape)
        hu[ct_masks["GTV"]] += prng.normal(0, 8.0 + 4.0 * max(signal + 2.0, 0.0), int(ct_masks["GTV"].sum()))
        hu_img = ct.image(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
        has_pet = bool(prng.uniform() >= no_pet_fraction)
        has_expr = bool(prng.uniform() >= no_expression_fraction)
        pdir = folder / centre.name.lower() / pid
        pdir.mkdir(parents=True)
        sfx = centre.suffix if i % 5 else (".nii" if centre.suffix == ".nii.gz" else centre.suffix)
        ct_file = pdir / f"ct{sfx}"
        sitk.WriteImage(hu_img, str(ct_file), useCompression=sfx != ".nii")
        rows: list[tuple[str, str, Path, Path | None, str, int | None]] = []
        if centre.label_map:
            lab = np.zeros(ct.size[::-1], np.uint8)
            lab[ct_masks["Parotid_L"]] = 2
            lab[ct_masks["Parotid_R"]] = 3
            lab[ct_masks["GTV"]] = 1
            sitk.WriteImage(ct.image(lab), str(pdir / f"labels{sfx}"), useCompression=True)
            for roi, label in (("GTV", 1), ("Parotid_L", 2), ("Parotid_R", 3)):
                rows.append((pid, "CT", ct_file, pdir / f"labels{sfx}", roi, label))
        else:
            for roi in ("GTV", "Parotid_L", "Parotid_R"):
                mfile = pdir / f"ct_{roi.lower()}{sfx}"
                sitk.WriteImage(ct.image(ct_masks[roi].astype(np.uint8)), str(mfile), useCompression=True)
                rows.append((pid, "CT", ct_file, mfile, roi, 1))
        if has_pet:
            pm = anatomy.masks(pet)
            suv = np.zeros(pet.size[::-1])
            suv[pm["body"]] = 0.9
            suv[pm["Parotid_L"] | pm["Parotid_R"]] = 1.8
            suv[pm["GTV"]] = max(5.0 + 1.8 * signal, 1.5)
            suv = ndimage.gaussian_filter(suv, 0.8) * prng.lognormal(0, 0.08, suv.shape)
            pet_file = pdir / f"pet_suv{sfx}"
            sitk.WriteImage(pet.image(suv.astype(np.float32)), str(pet_file), useCompression=True)
            pet_mask = pdir / f"pet_gtv{sfx}"
            sitk.WriteImage(pet.image(pm["GTV"].astype(np.uint8)), str(pet_mask), useCompression=True)
            rows.append((pid, "PET_FDG", pet_file, pet_mask, "GTV", 1))
        dose = _dose_gy(ct, anatomy, rx_gy, falloff_mm)
        voxel_cc = float(np.prod(ct.spacing)) / 1000.0
        mean_l = float(dose[ct_masks["Parotid_L"]].mean())
        mean_r = float(dose[ct_masks["Parotid_R"]].mean())
        vol_l, vol_r = (float(ct_masks[k].sum()) * voxel_cc for k in ("Parotid_L", "Parotid_R"))
        mean_parotid = (mean_l * vol_l + mean_r * vol_r) / (vol_l + vol_r)
        if centre.dose == "grid":
            dose_file = pdir / f"dose{sfx}"
            sitk.WriteImage(ct.image(dose), str(dose_file), useCompression=True)
            rows.append((pid, "DOSE", dose_file, None, "", None))
        else:
            for roi in ("Parotid_L", "Parotid_R", "GTV"):
                dvh_rows += [(pid, roi, d, v) for d, v in _differential_dvh(dose, ct_masks[roi], voxel_cc)]
        p_xero = float(expit((mean_parotid - XERO_D50_GY) / XERO_K_GY))
        xero_event = bool(prng.uniform() < p_xero)
        grade = int(prng.choice([2, 3], p=[0.7, 0.3])) if xero_event else int(prng.choice([0, 1]))
        # local control: Poisson TCP of the delivered regimen, alpha from the true RSI (Scott 2017 convention)
        alpha = max(-math.log(max(true_rsi, 1e-3)) / 2 - 2 * 0.05, 0.02)
        gtv_cc = float(ct_masks["GTV"].sum()) * voxel_cc
        tcp = math.exp(-1e6 * gtv_cc * math.exp(-alpha * rx_gy - 0.05 * rx_gy * rx_gy / n_fx))
        failed = bool(prng.uniform() > tcp)
        lc_months = round(float(prng.uniform(4, 20) if failed else prng.uniform(18, 60)), 1)
        age = round(float(prng.normal(61, 9)), 1)
        patients.append({
            "patient_id": pid, "site": "head_neck", "center": centre.name, "age_years": age,
            "sex": str(prng.choice(["F", "M", "M"])), "hpv": str(prng.choice(["pos", "neg", "unknown"])),
            "t_stage": str(prng.choice(["T1", "T2", "T3", "T4a"])), "total_dose_gy": rx_gy, "n_fractions": n_fx,
            "lc_months": lc_months, "lc_event": int(failed), "tox_xerostomia": grade,
            "smoking_pack_years": round(float(prng.gamma(2.0, 10.0)), 1),
        })
        if has_expr:
            row: dict[str, object] = {"patient_id": pid, **values}
            if i == 7:
                row["SUMO1"] = None          # one blank RSI gene: that patient's RSI is missing
            expression.append(row)
        if i == broken_idx and broken == "truncated_nifti":
            data = ct_file.read_bytes()
            ct_file.write_bytes(data[: len(data) // 2])
            broken_file = ct_file.relative_to(folder).as_posix()
        if i == broken_idx and broken == "mask_grid":
            gtv_row = next(r for r in rows if r[1] == "CT" and r[4] == "GTV")
            other = Grid(ct.size, tuple(s * 1.25 for s in ct.spacing), ct.origin, ct.direction)  # type: ignore[arg-type]
            bad_mask = pdir / f"ct_gtv_other_grid{sfx}"
            sitk.WriteImage(other.image(anatomy.masks(other)["GTV"].astype(np.uint8)), str(bad_mask))
            rows[rows.index(gtv_row)] = (*gtv_row[:3], bad_mask, *gtv_row[4:])
            broken_file = bad_mask.relative_to(folder).as_posix()
        for r in rows:
            images.append({"patient_id": r[0], "modality": r[1], "image": r[2].relative_to(folder).as_posix(),
                           "mask": r[3].relative_to(folder).as_posix() if r[3] else "", "roi": r[4],
                           "label": "" if r[5] is None else r[5]})
        truth.append({"patient_id": pid, "centre": centre.name, "true_rsi": true_rsi, "z": z,
                      "signal": signal, "has_expression": has_expr and i != 7, "has_pet": has_pet,
                      "mean_parotid_dose_gy": mean_parotid, "p_xerostomia": p_xero, "xerostomia_ge2": int(grade >= 2),
                      "alpha_per_gy": alpha, "tcp": tcp})
    pd.DataFrame(patients).to_csv(folder / "patients.csv", index=False)
    pd.DataFrame(images).to_csv(folder / "images.csv", index=False)
    pd.DataFrame(expression).to_csv(folder / "expression.csv", index=False)
    if dvh_rows:
        pd.DataFrame(dvh_rows, columns=["patient_id", "structure", "dose_gy", "volume_cc"]).to_csv(
            folder / "dvh.csv", index=False)
    broken_pid = f"{prefix}{seed:02d}-{broken_idx:03d}" if broken else None
    return SimulatedCohort(folder, pd.DataFrame(truth), broken_pid, broken_file)
