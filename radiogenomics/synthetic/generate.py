"""`generate_cohort`: simulate patients (in parallel) and write the cohort folder (format v1 + truth.csv)."""

from __future__ import annotations

import logging
import math
import multiprocessing
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics import __version__
from radiogenomics.errors import InputError
from radiogenomics.synthetic import anatomy as anat
from radiogenomics.synthetic import genomics, imaging, midtreatment, outcomes
from radiogenomics.synthetic.model import Centre, SynthParameters, draw_centres, draw_patient
from radiogenomics.synthetic.writer import write_csv, write_nifti, write_yaml

log = logging.getLogger(__name__)

MIN_GRID_SIZE = 16
MAX_GRID_SIZE = 512
#: Finest grid the model itself is simulated on: the reference grid (64^3 voxels of 2 x 2 x 2.5 mm). A finer or
#: anisotropic image grid gets the same patient (anatomy in mm, biology, dose, truth.csv, outcomes), simulated on
#: this grid and written on the image grid by resampling (labels nearest neighbour, images linear).
MODEL_GRID_SIZE = anat.REFERENCE_GRID
#: Spacing limits of ``spacing_mm`` (mm).
MIN_SPACING_MM, MAX_SPACING_MM = 0.1, 10.0
MAX_PATIENTS = 100_000
IMAGES_DIR = "images"
#: files the generator owns in the cohort folder (removed first by ``overwrite=True``)
OUTPUT_FILES = ("cohort.yaml", "patients.csv", "images.csv", "expression.csv", "truth.csv", "dvh.csv")
#: (modality, file name) of the per-patient images
MODALITY_FILES: tuple[tuple[str, str], ...] = (
    ("CT", "ct.nii.gz"), ("PET_FDG", "pet_fdg.nii.gz"), ("PET_FMISO", "pet_fmiso.nii.gz"),
)
#: (modality, file name pattern) of the mid-treatment images (``--mid-treatment-fraction K``; ``{k}`` is K)
MID_MODALITY_FILES: tuple[tuple[str, str], ...] = (("PET_FDG", "pet_fdg_fx{k}.nii.gz"),
                                                   ("PET_FMISO", "pet_fmiso_fx{k}.nii.gz"))
DOSE_FILE = "dose.nii.gz"
LABELS_FILE = "labels.nii.gz"
DVH_BIN_GY = 0.5

PATIENT_COLUMNS = ("patient_id", "site", "center", "age_years", "sex", "hpv", "t_stage", "total_dose_gy",
                   "n_fractions", "lc_months", "lc_event", "tox_xerostomia", "tox_dysphagia")
TRUTH_COLUMNS = ("patient_id", "alpha_per_gy", "beta_per_gy2", "alpha_beta_gy", "rsi_true", "hypoxic_fraction",
                 "median_po2_mmhg", "clonogens_total", "log10_clonogen_density", "tox_susceptibility", "tcp_true",
                 "ntcp_xerostomia", "ntcp_dysphagia", "center", "gtv_volume_cc", "parotid_mean_dose_gy",
                 "pcm_mean_dose_gy", "ct_texture_amp_hu", "local_failure")


@dataclass(frozen=True)
class PatientTask:
    """Everything a worker needs to simulate and write one patient (picklable)."""

    index: int
    n_patients: int
    entropy: int
    spawn_key: tuple[int, ...]
    centres: tuple[Centre, ...]
    params: SynthParameters
    grid_size: int
    out_dir: str
    image_shape: tuple[int, int, int] | None = None  # (x, y, z) voxels of the written images; None = the model grid
    spacing_mm: tuple[float, float, float] | None = None  # (x, y, z); None = the 128 x 128 x 160 mm field of view
    mid_treatment_fraction: int | None = None  # K: also write FDG and FMISO PET after K fractions (None = off)


def _sig(x: float, digits: int = 6) -> float:
    """Round to ``digits`` significant digits (stable, compact CSV text)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def simulate_patient(task: PatientTask) -> dict[str, Any]:
    """Simulate one patient, write its images, and return its table rows."""
    seq = np.random.SeedSequence(task.entropy, spawn_key=task.spawn_key)
    r_latent, r_anat, r_fields, r_img, r_dose, r_expr, r_out = (np.random.default_rng(s) for s in seq.spawn(7))
    params = task.params
    patient = draw_patient(r_latent, task.index, task.n_patients, task.centres, params)
    shift = r_anat.uniform(-5.0, 5.0, 3)
    offset = tuple(float(o + s) for o, s in zip(patient.centre.origin_offset_mm, shift, strict=True))
    model_grid = task.grid_size if task.image_shape is None else MODEL_GRID_SIZE
    geometry = anat.make_geometry(model_grid, offset)  # type: ignore[arg-type]
    anatomy = anat.build_anatomy(r_anat, geometry, patient, p_unilateral_neck=params.p_unilateral_neck)
    fields = imaging.tumour_fields(r_fields, anatomy, patient, params)
    ct = imaging.ct_image(r_img, anatomy, fields, patient, params)
    fdg = imaging.fdg_pet(r_img, anatomy, fields, patient, params)
    fmiso = imaging.fmiso_pet(r_img, anatomy, fields, patient, params)
    dose = imaging.plan_dose(r_dose, anatomy, patient, params)

    # --- truth and outcomes ------------------------------------------------------------------------
    labels = anatomy.labels
    vcc = geometry.voxel_volume_cc
    gtv = labels[anatomy.gtv_box] == anat.LABEL_GTV
    gtv_dose = dose[anatomy.gtv_box][gtv].astype(np.float64)
    po2 = fields.po2_mmhg
    hypoxic_fraction = float(np.mean(po2 < params.hypoxia_threshold_mmhg))
    tcp = outcomes.tumour_control(gtv_dose, fields.clonogens, po2, patient)
    lc = outcomes.local_control(r_out, tcp, params)
    parotid_dose = dose[(labels == anat.LABEL_PAROTID_L) | (labels == anat.LABEL_PAROTID_R)]
    pcm_dose = dose[labels == anat.LABEL_PCM]
    td50_x, m_x, n_x = outcomes.xerostomia_parameters()
    geud_x = outcomes.organ_geud(parotid_dose, vcc, n_x)
    geud_d = outcomes.organ_geud(pcm_dose, vcc, params.dysphagia_n)
    s = patient.tox_susceptibility
    ntcp_x = outcomes.ntcp(geud_x, s, td50_x, m_x)
    ntcp_d = outcomes.ntcp(geud_d, s, params.dysphagia_td50_gy, params.dysphagia_m)
    grade_x = outcomes.toxicity_grade(r_out, geud_x, s, td50_x, m_x, "xerostomia", params)
    grade_d = outcomes.toxicity_grade(r_out, geud_d, s, params.dysphagia_td50_gy, params.dysphagia_m,
                                      "dysphagia", params)
    expression = genomics.expression_profile(r_expr, patient, hypoxic_fraction, params)

    mid = None
    if task.mid_treatment_fraction is not None:  # an eighth stream: the seven above are untouched
        r_mid = np.random.default_rng(seq.spawn(1)[0])
        mid = midtreatment.simulate_mid_treatment(r_mid, task.mid_treatment_fraction, fields, gtv_dose, patient,
                                                  params, vcc)
        fmiso_mid = imaging.fmiso_pet(r_mid, anatomy, mid.fields, patient, params)
        fdg_mid = imaging.fdg_pet(r_mid, anatomy, fields, patient, params, tumour_suv=mid.fdg_tumour_suv)

    # --- files ----------------------------------------------------------------------------------------
    pid = patient.patient_id
    rel = f"{IMAGES_DIR}/{pid}"
    folder = Path(task.out_dir) / IMAGES_DIR / pid
    folder.mkdir(parents=True, exist_ok=True)
    grid: anat.Geometry | ImageGrid = geometry
    if task.image_shape is not None:  # the model grid's patient written on the image grid
        grid = image_grid(task.image_shape, task.spacing_mm, offset)
        labels, ct, fdg, fmiso, dose = (on_image_grid(a, geometry, grid, kind) for a, kind in (
            (labels, "labels"), (ct, "ct"), (fdg, "pet"), (fmiso, "pet"), (dose, "dose")))
    write_nifti(labels, grid, folder / LABELS_FILE)
    for (_, name), array in zip(MODALITY_FILES, (ct, fdg, fmiso), strict=True):
        write_nifti(array, grid, folder / name)
    write_nifti(dose, grid, folder / DOSE_FILE)
    image_rows: list[dict[str, Any]] = []
    for modality, name in MODALITY_FILES:
        for roi, label in anat.ROIS:
            image_rows.append({"patient_id": pid, "modality": modality, "image": f"{rel}/{name}",
                               "mask": f"{rel}/{LABELS_FILE}", "roi": roi, "label": label})
    image_rows.append({"patient_id": pid, "modality": "DOSE", "image": f"{rel}/{DOSE_FILE}", "mask": "",
                       "roi": "", "label": None})
    if mid is not None:
        timepoint = f"fraction_{mid.fraction}"
        for row in image_rows:
            row["timepoint"] = "planning"
        for (modality, pattern), array in zip(MID_MODALITY_FILES, (fdg_mid, fmiso_mid), strict=True):
            name = pattern.format(k=mid.fraction)
            if task.image_shape is not None:
                array = on_image_grid(array, geometry, grid, "pet")  # type: ignore[arg-type]
            write_nifti(array, grid, folder / name)
            for roi, label in anat.ROIS:
                image_rows.append({"patient_id": pid, "modality": modality, "image": f"{rel}/{name}",
                                   "mask": f"{rel}/{LABELS_FILE}", "roi": roi, "label": label,
                                   "timepoint": timepoint})

    dvh_rows: list[tuple[str, str, float, float]] = []
    image_vcc = float(np.prod(grid.spacing)) / 1000.0  # dvh.csv describes the written dose grid and label map
    for structure, label in (*anat.ROIS, (anat.PCM_NAME, anat.LABEL_PCM)):
        d = dose[labels == label]
        if d.size == 0:
            continue
        counts = np.bincount(np.floor(d / DVH_BIN_GY).astype(np.int64))
        for b in np.flatnonzero(counts):
            dvh_rows.append((pid, structure, round((b + 0.5) * DVH_BIN_GY, 4), round(counts[b] * image_vcc, 6)))

    patient_row = {
        "patient_id": pid, "site": "head_neck", "center": patient.centre.name, "age_years": patient.age_years,
        "sex": patient.sex, "hpv": patient.hpv, "t_stage": patient.t_stage,
        "total_dose_gy": patient.total_dose_gy, "n_fractions": patient.n_fractions,
        "lc_months": lc.lc_months, "lc_event": lc.lc_event, "tox_xerostomia": grade_x, "tox_dysphagia": grade_d,
    }
    truth_row = {
        "patient_id": pid, "alpha_per_gy": _sig(patient.alpha_per_gy), "beta_per_gy2": patient.beta_per_gy2,
        "alpha_beta_gy": _sig(patient.alpha_per_gy / patient.beta_per_gy2), "rsi_true": _sig(patient.rsi_true),
        "hypoxic_fraction": _sig(hypoxic_fraction), "median_po2_mmhg": _sig(float(np.median(po2))),
        "clonogens_total": _sig(float(fields.clonogens.sum())),
        "log10_clonogen_density": _sig(patient.log10_clonogen_density),
        "tox_susceptibility": _sig(s), "tcp_true": _sig(tcp), "ntcp_xerostomia": _sig(ntcp_x),
        "ntcp_dysphagia": _sig(ntcp_d), "center": patient.centre.name,
        "gtv_volume_cc": _sig(float(gtv.sum()) * vcc), "parotid_mean_dose_gy": _sig(geud_x),
        "pcm_mean_dose_gy": _sig(geud_d), "ct_texture_amp_hu": _sig(fields.texture_amp_hu),
        "local_failure": int(lc.failure),
    }
    if mid is not None:
        truth_row.update({k: (v if isinstance(v, int) else _sig(float(v))) for k, v in mid.truth.items()})
    return {"index": task.index, "patient": patient_row, "truth": truth_row,
            "expression": {"patient_id": pid, **expression}, "images": image_rows, "dvh": dvh_rows}


@dataclass(frozen=True)
class ImageGrid:
    """The grid images are written on when it is not the model grid: ``shape`` (x, y, z) voxels of ``spacing``
    (x, y, z) mm, centred where the model grid is centred."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]


def image_grid(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float] | None,
               offset_mm: tuple[float, ...]) -> ImageGrid:
    """The image grid of ``shape`` voxels: ``spacing_mm``, or the spacing that keeps the model's 128 x 128 x 160 mm
    field of view; centred on ``offset_mm`` like :func:`radiogenomics.synthetic.anatomy.make_geometry`."""
    fov = [anat.REFERENCE_GRID * s for s in anat.REFERENCE_SPACING_MM]
    spacing = tuple(spacing_mm) if spacing_mm is not None else tuple(round(f / n, 6) for f, n in zip(fov, shape,
                                                                                                        strict=True))
    origin = tuple(round(offset_mm[k] - (shape[k] - 1) / 2.0 * spacing[k], 3) for k in range(3))
    return ImageGrid(shape=shape, spacing=spacing, origin=origin)  # type: ignore[arg-type]


#: Resampling onto the image grid per array kind: (interpolator, value outside the model's field of view).
_RESAMPLE = {"labels": ("nearest", 0.0), "ct": ("linear", -1000.0), "pet": ("linear", 0.0), "dose": ("linear", 0.0)}


def on_image_grid(array: np.ndarray, model: anat.Geometry, grid: ImageGrid, kind: str) -> np.ndarray:
    """A model-grid array (indexed [z, y, x]) on the image grid: labels by nearest neighbour (a GTV voxel of the
    model stays whole, so on a grid that divides the model's voxels (64 k voxels per axis) the GTV volume is the
    model's exactly), images and dose by linear interpolation; the model's value type is kept."""
    import SimpleITK as sitk

    interpolator, outside = _RESAMPLE[kind]
    source = sitk.GetImageFromArray(np.ascontiguousarray(array))
    source.SetSpacing(model.spacing)
    source.SetOrigin(model.origin)
    out = sitk.Resample(source, list(grid.shape), sitk.Transform(),
                        sitk.sitkNearestNeighbor if interpolator == "nearest" else sitk.sitkLinear,
                        list(grid.origin), list(grid.spacing), [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], outside,
                        source.GetPixelID())
    return sitk.GetArrayFromImage(out)


def parse_grid(grid_size: int | tuple[int, ...] | str) -> tuple[int, int, int]:
    """``64``, ``(512, 512, 150)`` or ``"512,512,150"`` as (x, y, z) voxels; InputError for anything else."""
    values: tuple[object, ...]
    if isinstance(grid_size, str):
        try:
            values = tuple(int(v) for v in grid_size.replace("x", ",").split(","))
        except ValueError:
            raise InputError(f"grid size must be N or NX,NY,NZ, got {grid_size!r}.") from None
    elif isinstance(grid_size, tuple | list):
        values = tuple(grid_size)
    else:
        values = (grid_size,)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InputError(f"grid_size must be an integer, got {value!r}.")
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise InputError(f"grid size must be N or NX,NY,NZ, got {grid_size!r}.")
    for value in values:
        if not MIN_GRID_SIZE <= int(value) <= MAX_GRID_SIZE:  # type: ignore[call-overload]
            raise InputError(f"grid_size must be between {MIN_GRID_SIZE} and {MAX_GRID_SIZE}, got {value}.",
                             fix="use e.g. 64 (2 x 2 x 2.5 mm voxels), or 512,512,150 with --spacing-mm 0.98,0.98,3.")
    return tuple(int(v) for v in values)  # type: ignore[call-overload, return-value]


def parse_spacing(spacing_mm: tuple[float, ...] | str | None) -> tuple[float, float, float] | None:
    """``"0.98,0.98,3.0"`` or a 3-tuple as (x, y, z) mm; None stays None; InputError for anything else."""
    if spacing_mm is None:
        return None
    try:
        values = tuple(float(v) for v in (spacing_mm.split(",") if isinstance(spacing_mm, str) else spacing_mm))
    except (TypeError, ValueError):
        raise InputError(f"spacing must be three numbers X,Y,Z in mm, got {spacing_mm!r}.") from None
    if len(values) != 3 or not all(MIN_SPACING_MM <= v <= MAX_SPACING_MM for v in values):
        raise InputError(f"spacing must be three numbers X,Y,Z between {MIN_SPACING_MM} and {MAX_SPACING_MM} mm, "
                         f"got {spacing_mm!r}.", fix="e.g. --spacing-mm 0.98,0.98,3.0")
    return values  # type: ignore[return-value]


def _check_args(n_patients: int, seed: int, grid_size: int | tuple[int, ...] | str, workers: int,
                spacing_mm: tuple[float, ...] | str | None = None) -> tuple[tuple[int, int, int],
                                                                          tuple[float, float, float] | None]:
    for name, value in (("n_patients", n_patients), ("seed", seed), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InputError(f"{name} must be an integer, got {value!r}.")
    if not 1 <= n_patients <= MAX_PATIENTS:
        raise InputError(f"n_patients must be between 1 and {MAX_PATIENTS}, got {n_patients}.",
                         fix="ask for at least one patient.")
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}.", fix="use a non-negative integer seed.")
    shape = parse_grid(grid_size)
    spacing = parse_spacing(spacing_mm)
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}.")
    return shape, spacing


def _check_out_dir(out: Path, overwrite: bool) -> None:
    """The output folder's refusals, before anything is created."""
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is not a folder.", file=str(out),
                         fix="choose a new folder for the cohort.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("the output folder exists and is not empty.", file=str(out),
                         fix="choose a new folder, or pass --overwrite to replace the cohort in it.")


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    _check_out_dir(out, overwrite)
    if out.is_dir() and any(out.iterdir()):
        log.info("overwrite: removing the generator's previous outputs in %s", out)
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
        if (out / IMAGES_DIR).exists():
            shutil.rmtree(out / IMAGES_DIR)
    out.mkdir(parents=True, exist_ok=True)


def _run(tasks: list[PatientTask], workers: int,
         progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    total = len(tasks)
    results: list[dict[str, Any] | None] = [None] * total
    if progress:
        progress(0, total)
    if workers == 1 or total == 1:
        for done, task in enumerate(tasks, start=1):
            results[task.index] = simulate_patient(task)
            if progress:
                progress(done, total)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=ctx) as pool:
            pending: set[Future[dict[str, Any]]] = {pool.submit(simulate_patient, t) for t in tasks}
            done_count = 0
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    exc = fut.exception()
                    if exc is not None:
                        for other in pending:
                            other.cancel()
                        raise exc
                    record = fut.result()
                    results[record["index"]] = record
                    done_count += 1
                if progress:
                    progress(done_count, total)
    return [r for r in results if r is not None]


def _tables(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    patients = pd.DataFrame([r["patient"] for r in records], columns=list(PATIENT_COLUMNS))
    with_mid = any("mid_fraction" in r["truth"] for r in records)
    truth_columns = [*TRUTH_COLUMNS, *(midtreatment.MID_TRUTH_COLUMNS if with_mid else ())]
    truth = pd.DataFrame([r["truth"] for r in records], columns=truth_columns)
    expression = pd.DataFrame([r["expression"] for r in records], columns=["patient_id", *genomics.all_genes()])
    images = pd.DataFrame([row for r in records for row in r["images"]],
                          columns=["patient_id", "modality", "image", "mask", "roi", "label",
                                   *(["timepoint"] if with_mid else [])])
    images["label"] = images["label"].astype("Int64")
    dvh = pd.DataFrame([row for r in records for row in r["dvh"]],
                       columns=["patient_id", "structure", "dose_gy", "volume_cc"])
    return {"patients.csv": patients, "images.csv": images, "expression.csv": expression,
            "truth.csv": truth, "dvh.csv": dvh}


def generate_cohort(out_dir: str | Path, n_patients: int, seed: int,
                    grid_size: int | tuple[int, int, int] | str = 64, workers: int = 1,
                    progress: Callable[[int, int], None] | None = None, *, overwrite: bool = False,
                    params: SynthParameters | None = None,
                    spacing_mm: tuple[float, float, float] | str | None = None,
                    mid_treatment_fraction: int | None = None) -> Path:
    """Write a synthetic head-and-neck cohort (format v1 + ``truth.csv``) into ``out_dir`` and return it.

    Deterministic by ``seed``: the tables are byte-identical whatever ``workers`` is (each patient draws
    from its own child of ``numpy.random.SeedSequence(seed)``, so patient *i* is also the same in a larger
    cohort). ``grid_size`` voxels per axis cover a fixed 128 x 128 x 160 mm field of view (2 x 2 x 2.5 mm at
    64). ``progress(done, total)`` is called as patients finish. ``overwrite`` replaces the generator's
    outputs in a non-empty ``out_dir`` (otherwise that is an :class:`InputError`). The model is documented
    in ``docs/synthetic-cohort.md``.

    Clinical sizes: ``grid_size`` up to 512, or (x, y, z) voxels (``"512,512,150"``), and ``spacing_mm`` (x, y, z)
    for an anisotropic grid (its field of view is then shape x spacing). A grid finer than the model grid
    (:data:`MODEL_GRID_SIZE`, 2 x 2 x 2.5 mm), non-cubic or with ``spacing_mm`` gets the patient simulated on the
    model grid and written on its own grid: the same seed gives the same patient (anatomy in mm, biology, dose,
    truth.csv and patients.csv values) at every such grid and at 64. Coarser cubic grids (16-63, the fast test
    grids) are simulated at their own resolution as before.

    ``mid_treatment_fraction`` K (default None: off, and the cohort is exactly the one without it) also writes,
    for every patient, an FDG and an FMISO PET after K delivered fractions (images.csv rows with ``timepoint``
    ``fraction_K``, on the planning grid and label map) and the mid-treatment truth (reoxygenation, clonogen
    survival, metabolic response) in truth.csv; the baseline patient is unchanged (docs/synthetic-cohort.md,
    "Mid-treatment imaging").

    Every argument is checked before anything is created; if writing fails, a folder this call created is
    removed again (an existing one is left, with whatever the generator had written into it).
    """
    shape, spacing = _check_args(n_patients, seed, grid_size, workers, spacing_mm)
    params = params or SynthParameters()
    check_mid_treatment_fraction(mid_treatment_fraction, params)
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    cubic = shape[0] == shape[1] == shape[2]
    model_only = cubic and spacing is None and shape[0] <= MODEL_GRID_SIZE
    created = not out.exists()
    try:
        _prepare_out_dir(out, overwrite)
        root = np.random.SeedSequence(int(seed))
        cohort_seq, patient_seq = root.spawn(2)
        centres = draw_centres(np.random.default_rng(cohort_seq), params)
        tasks = [PatientTask(index=i, n_patients=n_patients, entropy=int(seed),
                             spawn_key=(*patient_seq.spawn_key, i), centres=centres, params=params,
                             grid_size=shape[0] if model_only else MODEL_GRID_SIZE, out_dir=str(out),
                             image_shape=None if model_only else shape, spacing_mm=spacing,
                             mid_treatment_fraction=mid_treatment_fraction)
                 for i in range(n_patients)]
        log.info("synthesising %d patients (seed %d, %s voxels, %d worker(s)) into %s", n_patients, seed,
                 "x".join(map(str, shape)), workers, out)
        records = _run(tasks, workers, progress)
        for name, frame in _tables(records).items():
            write_csv(frame, out / name)
        _write_meta(out, seed, n_patients, shape, spacing, model_only, mid_treatment_fraction)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    log.info("cohort written to %s", out)
    return out


def check_mid_treatment_fraction(k: int | None, params: SynthParameters) -> None:
    """InputError unless ``k`` is None or 1 <= k < the fewest fractions of any regimen the generator draws."""
    if k is None:
        return
    shortest = min(n for _, n, _ in params.regimens)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) < shortest:
        raise InputError(f"the mid-treatment fraction must be an integer in 1..{shortest - 1} (the shortest course "
                         f"drawn has {shortest} fractions), got {k!r}.",
                         fix="e.g. --mid-treatment-fraction 10 (imaging in week 2 of a 30-35 fraction course).")


def _write_meta(out: Path, seed: int, n_patients: int, shape: tuple[int, int, int],
                spacing: tuple[float, float, float] | None, model_only: bool,
                mid_treatment_fraction: int | None = None) -> None:
    if model_only:
        grid_spacing = list(anat.make_geometry(shape[0], (0.0, 0.0, 0.0)).spacing)
    else:
        grid_spacing = list(image_grid(shape, spacing, (0.0, 0.0, 0.0)).spacing)
    meta = {
        "name": f"synthetic-head-neck-seed{seed}",
        "description": "Synthetic head-and-neck cohort from the mechanistic model of docs/synthetic-cohort.md. "
                       "truth.csv holds the latent ground truth, for evaluation only.",
        "format_version": 1,
        "generator": {"package": "radiogenomics", "version": __version__, "module": "radiogenomics.synthetic",
                      "seed": int(seed), "n_patients": int(n_patients),
                      "grid_size": int(shape[0]) if shape[0] == shape[1] == shape[2] else list(shape),
                      "spacing_mm": grid_spacing,
                      "model_grid_size": int(shape[0]) if model_only else MODEL_GRID_SIZE,
                      "truth": "truth.csv"},
    }
    if mid_treatment_fraction is not None:
        meta["generator"]["mid_treatment_fraction"] = int(mid_treatment_fraction)  # type: ignore[index]
    write_yaml(meta, out / "cohort.yaml")
