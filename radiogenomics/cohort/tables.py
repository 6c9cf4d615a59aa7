"""Typed parsing of the cohort tables (patients, images, expression, dvh).

Each parser reads a CSV as text (so blanks, IDs like ``007`` and gene names are never mangled),
checks every cell, and returns the typed table together with *all* problems it found. The loader
raises on problems; the validator reports them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

from radiogenomics.cohort import schema
from radiogenomics.cohort.problems import ProblemList
from radiogenomics.features.naming import structure_slug


def read_csv_text(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV with every cell as a stripped string (blank cells become ``""``), and its header as written.

    pandas renames a repeated header ("AR", "AR.1"), so the raw header is returned to detect duplicates.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True,
                        encoding="utf-8-sig")
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.apply(lambda col: col.str.strip())
    with open(path, encoding="utf-8-sig", newline="") as fh:
        header = [c.strip() for c in next(csv.reader(fh), [])]
    return frame, header


def _to_float(value: str) -> float | None:
    """Parse a cell; ``None`` if it is not a number. Blank is NaN (missing)."""
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        return None


def _check_columns(frame: pd.DataFrame, header: list[str], required: tuple[str, ...], file: str,
                   problems: ProblemList) -> bool:
    missing = [c for c in required if c not in frame.columns]
    for col in missing:
        problems.add("missing_column", f"required column '{col}' is missing.",
                     f"add a '{col}' column (see docs/cohort-format.md).", file=file, column=col)
    dupes = sorted({c for c in header if header.count(c) > 1})
    for col in dupes:
        problems.add("duplicate_column", f"column '{col}' appears more than once.",
                     "keep one column of that name.", file=file, column=col)
    return not missing and not dupes


def parse_patients(path: Path, file: str = schema.PATIENTS_FILE) -> tuple[pd.DataFrame, ProblemList]:
    """Parse patients.csv into a typed frame (one row per patient, in file order)."""
    problems = ProblemList()
    raw, header = read_csv_text(path)
    if not _check_columns(raw, header, schema.PATIENT_REQUIRED, file, problems):
        return pd.DataFrame(columns=list(schema.PATIENT_REQUIRED)), problems
    if raw.empty:
        problems.add("no_patients", "patients.csv has no rows.", "add one row per patient.", file=file)

    out = raw.copy()
    seen: dict[str, int] = {}
    for i, pid in enumerate(raw["patient_id"], start=1):
        if pid == "":
            problems.add("blank_patient_id", "patient_id is blank.", "give every row a pseudonymous ID.",
                         file=file, row=i, column="patient_id")
        elif pid in seen:
            problems.add("duplicate_patient_id", f"patient_id '{pid}' also appears in row {seen[pid]}.",
                         "patient IDs must be unique: merge or rename the rows.", file=file, row=i,
                         patient_id=pid, column="patient_id")
        else:
            seen[pid] = i

    def where(i: int, column: str) -> dict[str, object]:
        return {"file": file, "row": i, "column": column, "patient_id": raw["patient_id"].iat[i - 1] or None}

    _check_choice(raw, "site", schema.SITES, False, where, problems)
    _check_choice(raw, "sex", schema.SEXES, True, where, problems)
    _check_choice(raw, "hpv", schema.HPV_STATUSES, True, where, problems)

    bounds = {"age_years": (0.0, schema.MAX_PLAUSIBLE_AGE_YEARS),
              "total_dose_gy": (0.0, schema.MAX_PLAUSIBLE_TOTAL_DOSE_GY),
              "lc_months": (0.0, 1200.0), "delivered_dose_gy": (0.0, schema.MAX_PLAUSIBLE_TOTAL_DOSE_GY)}
    for col in schema.PATIENT_FLOAT_COLUMNS:
        if col in raw.columns:
            out[col] = _numeric_column(raw[col], col, bounds[col], where, problems, integer=False)
    int_bounds = {"n_fractions": (1.0, float(schema.MAX_PLAUSIBLE_N_FRACTIONS)), "lc_event": (0.0, 1.0),
                  "delivered_n_fractions": (0.0, float(schema.MAX_PLAUSIBLE_N_FRACTIONS))}
    for col in schema.PATIENT_INT_COLUMNS:
        if col in raw.columns:
            out[col] = _numeric_column(raw[col], col, int_bounds[col], where, problems, integer=True)
    for col in [c for c in raw.columns if c.startswith(schema.TOX_PREFIX)]:
        lo, hi = schema.TOX_GRADE_RANGE
        out[col] = _numeric_column(raw[col], col, (float(lo), float(hi)), where, problems, integer=True)

    if {"total_dose_gy", "n_fractions"} <= set(out.columns):
        dpf = out["total_dose_gy"].astype(float) / out["n_fractions"].astype(float)
        for i, value in enumerate(dpf, start=1):
            if np.isfinite(value) and value > schema.MAX_PLAUSIBLE_DOSE_PER_FRACTION_GY:
                problems.add("implausible_dose_per_fraction",
                             f"{value:.1f} Gy per fraction (total_dose_gy / n_fractions) is implausible.",
                             "check that total_dose_gy is the total in Gy (not cGy) and n_fractions the count.",
                             **where(i, "total_dose_gy"))  # type: ignore[arg-type]
    _check_delivered(out, where, problems)
    if {"lc_event", "lc_months"} <= set(out.columns):
        for i, (event, months) in enumerate(zip(out["lc_event"], out["lc_months"], strict=True), start=1):
            if not pd.isna(event) and pd.isna(months):
                problems.add("missing_lc_months", "lc_event is given but lc_months is blank: the patient "
                             "cannot enter local-control analyses.", "give the months to local failure or last "
                             "follow-up.", severity="warning", **where(i, "lc_months"))  # type: ignore[arg-type]
    for col in ("patient_id", "site", "center", "sex", "hpv", "t_stage"):
        if col in out.columns:
            out[col] = out[col].astype(object).where(out[col] != "", None)
    return out.reset_index(drop=True), problems


def _check_delivered(out: pd.DataFrame, where, problems: ProblemList) -> None:  # type: ignore[no-untyped-def]
    """The optional ``delivered_n_fractions`` / ``delivered_dose_gy`` (contract section 8: what was delivered before
    mid-treatment adaptation) against the course and the site's dose-per-fraction rails."""
    if not {"delivered_n_fractions", "delivered_dose_gy"} & set(out.columns):
        return
    n_total = _float_values(out, "n_fractions")
    dose_total = _float_values(out, "total_dose_gy")
    n_done = _float_values(out, "delivered_n_fractions")
    dose_done = _float_values(out, "delivered_dose_gy")
    rails = _site_dpf_rails()
    for i in range(len(out)):
        row = i + 1
        if np.isfinite(n_done[i]) and np.isfinite(n_total[i]) and n_done[i] > n_total[i]:
            problems.add("delivered_exceeds_course",
                         f"delivered_n_fractions {n_done[i]:g} is more than the course's n_fractions {n_total[i]:g}.",
                         "delivered_n_fractions counts the fractions given before the mid-treatment imaging; it "
                         "must be below n_fractions.", **where(row, "delivered_n_fractions"))
        elif np.isfinite(n_done[i]) and np.isfinite(n_total[i]) and n_done[i] == n_total[i]:
            problems.add("delivered_whole_course",
                         f"delivered_n_fractions {n_done[i]:g} is the whole course (n_fractions {n_total[i]:g}): "
                         "nothing would remain to adapt.",
                         "delivered_n_fractions counts the fractions given before the mid-treatment imaging; it "
                         "must be below n_fractions (or leave it blank).", **where(row, "delivered_n_fractions"))
        if np.isfinite(dose_done[i]) and np.isfinite(dose_total[i]) and dose_done[i] > dose_total[i] * 1.001:
            problems.add("delivered_exceeds_course",
                         f"delivered_dose_gy {dose_done[i]:g} is more than the course's total_dose_gy "
                         f"{dose_total[i]:g}.", "check both doses (Gy, not cGy); delivered_dose_gy is the dose "
                         "given before the mid-treatment imaging and cannot exceed total_dose_gy.",
                         **where(row, "delivered_dose_gy"))
        if not (np.isfinite(n_done[i]) and np.isfinite(dose_done[i])) or n_done[i] < 0 or dose_done[i] < 0:
            continue  # a negative value is already an error of its column (no dose per fraction of it)
        if n_done[i] == 0:
            if dose_done[i] > 0:
                problems.add("implausible_dose_per_fraction",
                             f"delivered_dose_gy {dose_done[i]:g} Gy in 0 delivered fractions.",
                             "give the number of fractions that delivered that dose.",
                             **where(row, "delivered_n_fractions"))
            continue
        dpf = dose_done[i] / n_done[i]
        if dpf > schema.MAX_PLAUSIBLE_DOSE_PER_FRACTION_GY:
            problems.add("implausible_dose_per_fraction",
                         f"{dpf:.1f} Gy per fraction (delivered_dose_gy / delivered_n_fractions) is implausible.",
                         "check that delivered_dose_gy is in Gy (not cGy) and delivered_n_fractions the count.",
                         **where(row, "delivered_dose_gy"))
            continue
        site = out["site"].iat[i] if "site" in out.columns else None
        lo, hi = rails.get(str(site), (None, None))
        if lo is not None and hi is not None and not lo - 1e-9 <= dpf <= hi + 1e-9:
            problems.add("delivered_dose_per_fraction_outside_rails",
                         f"{dpf:.3g} Gy per fraction delivered (delivered_dose_gy / delivered_n_fractions) is outside "
                         f"the {site} rails [{lo:g}, {hi:g}] Gy per fraction.",
                         "check delivered_dose_gy and delivered_n_fractions; the adapted course is checked against "
                         "these rails.", severity="warning", **where(row, "delivered_dose_gy"))


def _float_values(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").astype(float).to_numpy(dtype=float, na_value=np.nan)


def _site_dpf_rails() -> dict[str, tuple[float, float]]:
    """site -> (min, max) dose per fraction of the packaged rails (empty when they cannot be read)."""
    from radiogenomics.radiobiology.rails import load_rails

    try:
        rails = load_rails()
    except Exception:  # pragma: no cover - the packaged table is tested elsewhere; never block parsing on it
        return {}
    return {site: (float(r.min_dose_per_fraction_gy), float(r.max_dose_per_fraction_gy))
            for site, r in rails.sites.items()}


def _check_choice(raw: pd.DataFrame, col: str, allowed: tuple[str, ...], blank_ok: bool, where,  # type: ignore[no-untyped-def]
                  problems: ProblemList) -> None:
    if col not in raw.columns:
        return
    for i, value in enumerate(raw[col], start=1):
        if value == "" and blank_ok:
            continue
        if value not in allowed:
            shown = "blank" if value == "" else f"'{value}'"
            problems.add(f"invalid_{col}", f"{col} is {shown}; allowed: {', '.join(allowed)}.",
                         f"use one of {', '.join(allowed)}" + (" or leave blank." if blank_ok else "."),
                         **where(i, col))


def _numeric_column(values: pd.Series, col: str, bounds: tuple[float, float], where,  # type: ignore[no-untyped-def]
                    problems: ProblemList, *, integer: bool) -> pd.Series:
    lo, hi = bounds
    parsed: list[float] = []
    for i, text in enumerate(values, start=1):
        number = _to_float(text)
        if number is None:
            problems.add("non_numeric", f"{col} is '{text}', not a number.",
                         f"write {col} as a number (blank = missing).", **where(i, col))
            parsed.append(math.nan)
            continue
        if text == "":
            parsed.append(math.nan)
            continue
        if not math.isfinite(number):
            problems.add("non_finite", f"{col} is '{text}'.", f"give a finite {col} or leave it blank.",
                         **where(i, col))
            parsed.append(math.nan)
            continue
        if integer and number != int(number):
            problems.add("not_integer", f"{col} is {text}, not a whole number.", f"write {col} as an integer.",
                         **where(i, col))
        if number < lo or number > hi:
            problems.add(_range_code(col, number < lo), f"{col} = {text} is outside [{lo:g}, {hi:g}].",
                         _range_fix(col), **where(i, col))
        parsed.append(number)
    series = pd.Series(parsed, index=values.index, dtype=float)
    return series.round().astype("Int64") if integer else series


def _range_code(col: str, below: bool) -> str:
    if col in ("total_dose_gy", "dose_gy", "delivered_dose_gy") and below:
        return "negative_dose"
    if col == "lc_event":
        return "invalid_lc_event"
    if col.startswith(schema.TOX_PREFIX):
        return "invalid_tox_grade"
    if col in ("total_dose_gy", "dose_gy", "delivered_dose_gy"):
        return "implausible_dose"
    return f"out_of_range_{col}"


def _range_fix(col: str) -> str:
    if col == "lc_event":
        return "lc_event is 1 (local failure observed) or 0 (censored)."
    if col.startswith(schema.TOX_PREFIX):
        return "toxicity is the worst CTCAE grade, an integer 0..5 (blank = not assessed)."
    if col == "total_dose_gy":
        return "give the delivered total dose in Gy (not cGy); it must be >= 0."
    if col == "n_fractions":
        return "give the number of delivered fractions (>= 1)."
    if col == "delivered_dose_gy":
        return "give the dose delivered before the mid-treatment imaging in Gy (not cGy); it must be >= 0."
    if col == "delivered_n_fractions":
        return "give the number of fractions delivered before the mid-treatment imaging (>= 0)."
    return f"check the units of {col}."


def parse_images(path: Path, root: Path, patient_ids: set[str] | None,
                 file: str = schema.IMAGES_FILE) -> tuple[pd.DataFrame, ProblemList]:
    """Parse images.csv; paths become absolute. File existence is checked here, contents are not."""
    problems = ProblemList()
    raw, header = read_csv_text(path)
    columns = list(schema.IMAGES_COLUMNS)
    if not _check_columns(raw, header, schema.IMAGES_REQUIRED, file, problems):
        return pd.DataFrame(columns=columns), problems
    for col in ("mask", "roi", "label", "structure", schema.TIMEPOINT_COLUMN):
        if col not in raw.columns:
            raw[col] = ""
    rows: list[dict[str, object]] = []
    seen: dict[tuple[str, str, str, str], tuple[int, str]] = {}
    for i, rec in enumerate(raw.to_dict("records"), start=1):
        pid, modality, roi = rec["patient_id"], rec["modality"], rec["roi"]
        loc = {"file": file, "row": i, "patient_id": pid or None}
        if pid == "":
            problems.add("blank_patient_id", "patient_id is blank.", "fill in the patient's ID.", **loc)
        elif patient_ids is not None and pid not in patient_ids:
            problems.add("unknown_patient_id", f"patient '{pid}' is not in patients.csv.",
                         "add the patient to patients.csv or fix the ID.", column="patient_id", **loc)
        if modality not in schema.MODALITIES:
            problems.add("invalid_modality", f"modality '{modality}' is not one of {', '.join(schema.MODALITIES)}.",
                         "use a modality name from the format (e.g. CT, PET_FDG, DOSE).", column="modality", **loc)
        is_dose = modality == schema.DOSE_MODALITY
        image = _resolve(root, rec["image"])
        mask = _resolve(root, rec["mask"]) if rec["mask"] else None
        if rec["image"] == "":
            problems.add("missing_image_path", "image is blank.", "give the image path relative to the cohort.",
                         column="image", **loc)
        elif not image.exists():
            problems.add("missing_file", f"image file '{rec['image']}' does not exist.",
                         "fix the path (relative to the cohort folder) or add the file.", column="image", **loc)
        if is_dose and mask is not None:
            problems.add("mask_on_dose_row", "DOSE rows take no mask (DVHs use the ROI masks of other rows).",
                         "leave mask blank on DOSE rows.", column="mask", **loc)
        if not is_dose and modality in schema.MODALITIES:
            if mask is None:
                problems.add("missing_mask_path", f"{modality} row has no mask: no ROI features can be computed.",
                             "give the ROI mask (label map, binary mask or RTSTRUCT).", column="mask",
                             severity="warning", **loc)
            elif not mask.exists():
                problems.add("missing_file", f"mask file '{rec['mask']}' does not exist.",
                             "fix the path (relative to the cohort folder) or add the file.", column="mask", **loc)
            if roi == "" and mask is not None:
                problems.add("missing_roi", f"{modality} row has no roi (the structure's role).",
                             "name the role (e.g. GTV, Parotid_L); the name in the mask file, when it differs, "
                             "goes in the structure column.", column="roi", **loc)
        label = 1
        if rec["label"] != "":
            number = _to_float(rec["label"])
            if number is None or not math.isfinite(number) or number != int(number) or number < 1:
                problems.add("invalid_label", f"label '{rec['label']}' is not a positive integer.",
                             "give the integer label value of the ROI in the label map (default 1).",
                             column="label", **loc)
            else:
                label = int(number)
        timepoint = schema.parse_timepoint(rec[schema.TIMEPOINT_COLUMN])
        if timepoint is None:
            problems.add("invalid_timepoint", f"timepoint '{rec[schema.TIMEPOINT_COLUMN]}' is not blank, "
                         f"'{schema.PLANNING}' or 'fraction_K' with K >= 1 delivered fractions.",
                         "leave it blank (or write 'planning') for the planning image; write e.g. 'fraction_10' for "
                         "imaging after 10 delivered fractions.", column=schema.TIMEPOINT_COLUMN, **loc)
            timepoint = rec[schema.TIMEPOINT_COLUMN]
        # keyed by the role's feature-column slug: SpinalCord and spinal_cord would fill the same columns
        key = (pid, modality, structure_slug(roi) if roi else "", timepoint)
        if key in seen:
            at = "planning image" if timepoint == schema.PLANNING else f"{timepoint} image"
            first, other = seen[key]
            also = "" if other == roi else (f" with roi '{other}', the same role as '{roi}' (both fill the "
                                             f"{structure_slug(roi)} feature columns)")
            problems.add("duplicate_image_row",
                         f"({pid}, {modality}, {roi or 'no ROI'}) has another {at} in row {first}{also}.",
                         "keep one row per (patient, modality, ROI) at each timepoint (blank timepoint = planning; "
                         "a role matches in any case/spacing).", **loc)
        else:
            seen[key] = (i, roi)
        rows.append({"patient_id": pid, "modality": modality, "image": image, "mask": mask,
                     "roi": roi, "label": label, "structure": rec["structure"] or None, "timepoint": timepoint,
                     "image_rel": rec["image"], "mask_rel": rec["mask"]})
    frame = pd.DataFrame(rows, columns=[*columns, "image_rel", "mask_rel"])
    return frame, problems


def check_timepoints(images: pd.DataFrame, patients: pd.DataFrame,
                     file: str = schema.IMAGES_FILE) -> ProblemList:
    """Cross-table checks of images.csv ``timepoint`` (rows in file order, as :func:`parse_images` returns them):
    a ``fraction_K`` row needs K < the patient's ``n_fractions`` (some of the course must remain) and, where
    patients.csv gives ``delivered_n_fractions``, K equal to it (the delivered_* columns describe the patient's
    one mid-treatment timepoint: K above it images fractions that were not delivered, K below it disagrees); a
    mid-treatment row without a planning row of its patient and modality is a warning (no baseline)."""
    problems = ProblemList()
    if images.empty or schema.TIMEPOINT_COLUMN not in images.columns or "patient_id" not in patients.columns:
        return problems
    ids = patients["patient_id"].astype(object).where(patients["patient_id"].notna(), None)
    courses: dict[str, tuple[float, float]] = {}
    n_total, n_done = _float_values(patients, "n_fractions"), _float_values(patients, "delivered_n_fractions")
    for i, pid in enumerate(ids):
        if pid is not None and str(pid) not in courses:
            courses[str(pid)] = (n_total[i], n_done[i])
    planning = {(str(p), str(m)) for p, m, t in zip(images["patient_id"], images["modality"],
                                                   images[schema.TIMEPOINT_COLUMN], strict=True)
                if t == schema.PLANNING}
    warned: set[tuple[str, str, str]] = set()
    for i, rec in enumerate(images.to_dict("records"), start=1):
        timepoint = str(rec[schema.TIMEPOINT_COLUMN])
        if schema.parse_timepoint(timepoint) in (None, schema.PLANNING):
            continue
        k = schema.timepoint_fraction(timepoint) or 0
        pid = str(rec["patient_id"])
        loc = {"file": file, "row": i, "patient_id": pid or None, "column": schema.TIMEPOINT_COLUMN}
        total, done = courses.get(pid, (math.nan, math.nan))
        if np.isfinite(total) and k >= total:
            problems.add("timepoint_after_course",
                         f"{timepoint} is imaging after {k} fractions, but the patient's course has {total:g} "
                         f"(n_fractions in patients.csv): nothing would remain to adapt.",
                         f"K counts the fractions delivered before the imaging; it must be below {total:g} "
                         "(or correct n_fractions).", **loc)
        elif np.isfinite(done) and k > done:
            problems.add("timepoint_after_delivered",
                         f"{timepoint} is imaging after {k} fractions, but patients.csv says "
                         f"delivered_n_fractions = {done:g}.",
                         "make the timepoint's K at most delivered_n_fractions (the fractions given before the "
                         "imaging), or correct delivered_n_fractions.", **loc)
        elif np.isfinite(done) and done >= 0 and k < done:
            problems.add("delivered_differs_from_timepoint",
                         f"{timepoint} is imaging after {k} fractions, but patients.csv says "
                         f"delivered_n_fractions = {done:g} for patient {pid}.",
                         "the delivered_* columns of patients.csv describe the patient's one mid-treatment "
                         f"timepoint: set delivered_n_fractions to {k} (and delivered_dose_gy to the dose of those "
                         "fractions), or leave both blank to derive them from the timepoint.", **loc)
        if (pid, str(rec["modality"])) not in planning and (pid, str(rec["modality"]), timepoint) not in warned:
            warned.add((pid, str(rec["modality"]), timepoint))
            problems.add("no_planning_image",
                         f"{timepoint} {rec['modality']} image has no planning {rec['modality']} image of the same "
                         "patient to compare with.", "add the planning (baseline) image of that modality (blank "
                         "timepoint), or remove the row.", severity="warning", **loc)
    return problems


def _resolve(root: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else (root / path)


#: Documented alternative columns for an RSI slot (radiobiology brief: CDK1 slot = PAK2 probe).
RSI_SLOT_SUBSTITUTES = {"CDK1": "PAK2"}


def parse_expression(path: Path, patient_ids: set[str] | None, required_genes: tuple[str, ...] = (),
                     file: str = schema.EXPRESSION_FILE) -> tuple[pd.DataFrame, ProblemList]:
    """Parse expression.csv into a float frame indexed by patient_id (genes as columns, NaN = missing).

    `required_genes` missing as columns is an error naming each gene; a blank value of a required gene
    is a warning (that patient's score needs an explicit imputation policy).
    """
    problems = ProblemList()
    raw, header = read_csv_text(path)
    if raw.shape[1] == 0 or raw.columns[0] != "patient_id":
        problems.add("missing_column", "the first column of expression.csv must be 'patient_id'.",
                     "put patient_id first, then one column per HGNC gene symbol.", file=file, column="patient_id")
        return pd.DataFrame(), problems
    _check_columns(raw, header, ("patient_id",), file, problems)
    genes = list(raw.columns[1:])
    for gene in genes:
        if gene == "" or gene.startswith("Unnamed"):
            problems.add("blank_gene_name", "a gene column has no name.", "name every column by its HGNC symbol.",
                         file=file, column=gene)
    for gene in required_genes:
        if gene in genes:
            continue
        substitute = RSI_SLOT_SUBSTITUTES.get(gene)
        if substitute in genes:
            # Eschrich's array code fills the CDK1 slot with probe 205962_at (annotated PAK2).
            problems.add("rsi_slot_substitute", f"RSI gene '{gene}' is absent but '{substitute}' is present.",
                         f"map the slot: `radiogenomics extract --rsi-gene-map {gene}={substitute}`, or "
                         f"`rsi_gene_map: {{{gene}: {substitute}}}` in cohort.yaml (see docs/cohort-format.md).",
                         file=file, column=gene, severity="warning")
        else:
            problems.add("missing_rsi_gene", f"RSI gene '{gene}' is not a column of expression.csv.",
                         f"add the '{gene}' column, or map its RSI slot to the column that holds it "
                         "(`extract --rsi-gene-map SLOT=COLUMN` or `rsi_gene_map: {SLOT: COLUMN}` in cohort.yaml, "
                         "e.g. CDK1=PAK2).", file=file, column=gene)
    values = np.full((len(raw), len(genes)), np.nan)
    seen: dict[str, int] = {}
    for i, pid in enumerate(raw["patient_id"], start=1):
        loc = {"file": file, "row": i, "patient_id": pid or None}
        if pid == "":
            problems.add("blank_patient_id", "patient_id is blank.", "fill in the patient's ID.", **loc)
        elif pid in seen:
            problems.add("duplicate_patient_id", f"patient '{pid}' also appears in row {seen[pid]}.",
                         "keep one expression row per patient.", **loc)
        else:
            seen[pid] = i
            if patient_ids is not None and pid not in patient_ids:
                problems.add("unknown_patient_id", f"patient '{pid}' is not in patients.csv.",
                             "add the patient to patients.csv or remove the row.", **loc)
    gene_cells = raw[genes].to_numpy(dtype=object) if genes else np.empty((len(raw), 0), dtype=object)
    ids = raw["patient_id"].tolist()
    required = set(required_genes)
    for j, gene in enumerate(genes):
        column = pd.to_numeric(pd.Series(gene_cells[:, j]).replace("", np.nan), errors="coerce").to_numpy(float)
        blank = gene_cells[:, j] == ""
        suspect = (~np.isfinite(column) & ~blank) | (blank & (gene in required))
        values[:, j] = np.where(np.isfinite(column), column, np.nan)
        for cell in np.flatnonzero(suspect):  # only the few problem cells are looked at one by one
            text = str(gene_cells[cell, j])
            loc = {"file": file, "row": int(cell) + 1, "patient_id": ids[cell] or None, "column": gene}
            number = _to_float(text)
            if number is None:
                problems.add("non_numeric_expression", f"gene {gene} value '{text}' is not a number.",
                             "write normalised log2 expression as a number (blank = missing).", **loc)
            elif text != "":
                problems.add("non_finite_expression", f"gene {gene} value is '{text}'.",
                             "give a finite log2 expression value or leave the cell blank.", **loc)
            else:
                problems.add("missing_rsi_value", f"RSI gene {gene} is blank for this patient.",
                             "measure the gene, or choose an explicit imputation policy for the RSI "
                             "(the patient is then flagged).", severity="warning", **loc)
    frame = pd.DataFrame(values, columns=genes, index=pd.Index(raw["patient_id"].tolist(), name="patient_id"))
    frame = frame[~frame.index.duplicated(keep="first")]
    return frame, problems


def parse_dvh(path: Path, patient_ids: set[str] | None,
              file: str = schema.DVH_FILE) -> tuple[pd.DataFrame, ProblemList]:
    """Parse dvh.csv (long format, differential bins)."""
    problems = ProblemList()
    raw, header = read_csv_text(path)
    if not _check_columns(raw, header, schema.DVH_COLUMNS, file, problems):
        return pd.DataFrame(columns=list(schema.DVH_COLUMNS)), problems
    out = raw[list(schema.DVH_COLUMNS)].copy()

    def where(i: int, column: str) -> dict[str, object]:
        return {"file": file, "row": i, "column": column, "patient_id": raw["patient_id"].iat[i - 1] or None}

    out["dose_gy"] = _numeric_column(raw["dose_gy"], "dose_gy", (0.0, schema.MAX_PLAUSIBLE_TOTAL_DOSE_GY),
                                     where, problems, integer=False)
    out["volume_cc"] = _numeric_column(raw["volume_cc"], "volume_cc", (0.0, 1e6), where, problems, integer=False)
    for col in ("dose_gy", "volume_cc"):
        for blank_row in np.flatnonzero(raw[col].to_numpy() == "") + 1:
            problems.add("missing_value", f"{col} is blank.", f"every DVH bin needs {col}.",
                         **where(int(blank_row), col))  # type: ignore[arg-type]
    for i, (pid, structure) in enumerate(zip(raw["patient_id"], raw["structure"], strict=True), start=1):
        if patient_ids is not None and pid not in patient_ids:
            problems.add("unknown_patient_id", f"patient '{pid}' is not in patients.csv.",
                         "add the patient to patients.csv or fix the ID.", **where(i, "patient_id"))  # type: ignore[arg-type]
        if structure == "":
            problems.add("missing_structure", "structure is blank.", "name the structure of the DVH bin.",
                         **where(i, "structure"))  # type: ignore[arg-type]
    return out, problems
