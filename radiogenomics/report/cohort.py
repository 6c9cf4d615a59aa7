"""Cohort sections of the report: the overview, and Kaplan-Meier local control by GARD tertile.

GARD (Scott et al., Lancet Oncol 2017;18:202) is computed per patient from the cohort's own expression (RSI,
Eschrich et al., IJROBP 2009;75:489) and the delivered regimen in patients.csv, with
:func:`radiogenomics.radiobiology.gard` (beta = 0.05 Gy^-2). Tertiles are cut at the cohort's own 1/3 and 2/3
quantiles; the curves are ``sksurv.nonparametric.kaplan_meier_estimator`` (log-log 95 % CI) and the p value
is the log-rank test across the three groups (``sksurv.compare_survival``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.report import figures
from radiogenomics.report.sections import Figure, Paragraph, Section, Table, fmt

log = logging.getLogger(__name__)

OVERVIEW = ("cohort", "Cohort overview")
KM = ("km-gard", "Local control by GARD group")
#: Landmark for the local-control table (months).
LANDMARK_MONTHS = 24.0
TERTILES = ("low GARD", "middle GARD", "high GARD")


def overview_section(cohort: Any) -> Section:
    """Patients, centres, sites, modalities, expression, outcomes and events of a loaded cohort."""
    patients: pd.DataFrame = cohort.patients
    n = len(patients)
    section = Section(*OVERVIEW)
    section.add(Paragraph(f"{n} patients in {cohort.root.name} ({cohort.root})."))
    rows: list[list[str]] = []
    for column, label in (("center", "centre"), ("site", "site"), ("sex", "sex"), ("hpv", "HPV"),
                          ("t_stage", "T stage")):
        if column in patients.columns:
            counts = patients[column].fillna("missing").astype(str).value_counts().sort_index()
            rows.append([label, ", ".join(f"{k}: {v}" for k, v in counts.items())])
    for column, label in (("age_years", "age (years)"), ("total_dose_gy", "delivered dose (Gy)"),
                          ("n_fractions", "fractions"), ("lc_months", "follow-up (months)")):
        if column in patients.columns:
            values = pd.to_numeric(patients[column], errors="coerce")
            rows.append([label, f"median {fmt(float(values.median()))} "
                                f"(range {fmt(float(values.min()))}\u2013{fmt(float(values.max()))}), "
                                f"{int(values.isna().sum())} missing"])
    if "lc_event" in patients.columns:
        events = pd.to_numeric(patients["lc_event"], errors="coerce")
        rows.append(["local failures", f"{int((events == 1).sum())} of {int(events.notna().sum())} "
                                       f"with follow-up ({(events == 1).mean():.0%})"])
    for column in [c for c in patients.columns if c.startswith("tox_")]:
        grade = pd.to_numeric(patients[column], errors="coerce")
        rows.append([f"{column.removeprefix('tox_')} grade \u2265 2",
                     f"{int((grade >= 2).sum())} of {int(grade.notna().sum())} assessed"])
    expression = cohort.expression
    rows.append(["expression profiles", f"{0 if expression is None else len(expression)} of {n} patients"])
    rows.append(["DVH table", "yes" if cohort.dvh is not None else "no"])
    section.add(Table(["item", "value"], rows, caption="Patients, covariates and outcomes (patients.csv)."))
    modalities = _modalities(cohort)
    if modalities:
        section.add(Figure(figures.data_uri(figures.count_bars(
            modalities, title="Patients with each modality", xlabel="modality (images.csv)")),
            alt="bar chart of the number of patients with each imaging modality",
            caption="Number of patients with at least one image of each modality."))
    if "center" in patients.columns:
        centres = patients["center"].fillna("missing").astype(str).value_counts().sort_index()
        section.add(Figure(figures.data_uri(figures.count_bars(
            {str(k): int(v) for k, v in centres.items()}, title="Patients per centre", xlabel="centre")),
            alt="bar chart of the number of patients per centre", caption="Patients per acquiring centre."))
    return section


def _modalities(cohort: Any) -> dict[str, int]:
    images: pd.DataFrame = cohort.images
    if images is None or images.empty:
        return {}
    counts = images.groupby("modality")["patient_id"].nunique().sort_index()
    return {str(k): int(v) for k, v in counts.items()}


def patient_gard(cohort: Any) -> pd.DataFrame:
    """``patient_id, rsi, gard, lc_months, lc_event`` of the patients with a complete RSI profile and regimen."""
    from radiogenomics.cohort.loader import rsi_genes
    from radiogenomics.radiobiology import gard, rsi_score

    patients: pd.DataFrame = cohort.patients
    needed = {"total_dose_gy", "n_fractions", "lc_months", "lc_event"}
    if cohort.expression is None or not needed <= set(patients.columns):
        return pd.DataFrame(columns=["patient_id", "rsi", "gard", "lc_months", "lc_event"])
    expression = cohort.expression
    genes = [g for g in rsi_genes(cohort.rsi_gene_map) if g in expression.columns]
    complete = expression.loc[expression[genes].notna().all(axis=1)] if len(genes) == 10 else expression.iloc[:0]
    rsi = rsi_score(complete, gene_map=cohort.rsi_gene_map or None) if len(complete) else pd.Series(dtype=float)
    table = patients.assign(patient_id=patients["patient_id"].astype(str)).set_index("patient_id")
    table = table.join(rsi.rename("rsi"), how="inner")
    dose = pd.to_numeric(table["total_dose_gy"], errors="coerce").to_numpy(dtype=float)
    n_fx = pd.to_numeric(table["n_fractions"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(dose) & np.isfinite(n_fx) & (n_fx > 0)
    values = np.full(len(table), np.nan)
    if ok.any():
        values[ok] = np.asarray(gard(table["rsi"].to_numpy(dtype=float)[ok], dose[ok], n_fx[ok], invalid="nan"))
    out = pd.DataFrame({"patient_id": table.index, "rsi": table["rsi"].to_numpy(dtype=float), "gard": values,
                        "lc_months": pd.to_numeric(table["lc_months"], errors="coerce").to_numpy(dtype=float),
                        "lc_event": pd.to_numeric(table["lc_event"], errors="coerce").to_numpy(dtype=float)})
    return out.dropna().reset_index(drop=True)


def km_section(cohort: Any) -> Section:
    """Kaplan-Meier local control by GARD tertile with the log-rank p value (see the module docstring)."""
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator
    from sksurv.util import Surv

    table = patient_gard(cohort)
    if len(table) < 6 or table["gard"].nunique() < 3:
        return Section(*KM, missing=f"only {len(table)} patient(s) have expression for all 10 RSI genes, a "
                                    "regimen and local-control follow-up: at least 6 are needed for tertiles.")
    table["group"] = pd.qcut(table["gard"], 3, labels=list(TERTILES))
    section = Section(*KM)
    section.add(Paragraph(
        "GARD = n d (\u03b1 + \u03b2 d) of the delivered regimen, \u03b1 from the patient's RSI "
        "(Scott et al., Lancet Oncol 2017;18:202; RSI: Eschrich et al., IJROBP 2009;75:489), \u03b2 = 0.05 "
        "Gy\u207b\u00b2. Groups are the cohort's GARD tertiles; recomputed here from expression.csv and "
        "patients.csv, not from a model."))
    y = Surv.from_arrays(table["lc_event"].to_numpy() > 0.5, table["lc_months"].to_numpy())
    p_value: float | None
    try:
        _, p_value = compare_survival(y, table["group"].astype(str).to_numpy())
        p_value = float(p_value)
    except ValueError as exc:  # e.g. no event at all
        log.info("log-rank test not computed: %s", exc)
        p_value = None
    curves: list[Any] = []
    rows: list[list[str]] = []
    for label in TERTILES:
        sub = table[table["group"] == label]
        if sub.empty:
            continue
        event = sub["lc_event"].to_numpy() > 0.5
        times, surv, ci = kaplan_meier_estimator(event, sub["lc_months"].to_numpy(), conf_type="log-log")
        low, high = float(sub["gard"].min()), float(sub["gard"].max())
        curves.append((f"{label} {low:.0f}\u2013{high:.0f} (n={len(sub)})", times, surv, (ci[0], ci[1])))
        at = surv[times <= LANDMARK_MONTHS]
        rows.append([label, f"{low:.1f}\u2013{high:.1f}", str(len(sub)), str(int(event.sum())),
                     fmt(float(at[-1]) if at.size else 1.0)])
    section.add(Figure(figures.data_uri(figures.km_by_group(
        curves, title="Local control by GARD tertile", p_value=p_value)),
        alt="Kaplan-Meier curves of local control for the low, middle and high GARD tertiles",
        caption="Kaplan-Meier local control with 95 % log-log confidence bands; log-rank test across the "
                "three groups" + ("" if p_value is not None else " (not computable: no event)") + "."))
    section.add(Table(["group", "GARD range", "patients", "local failures",
                       f"local control at {LANDMARK_MONTHS:.0f} months (KM)"], rows,
                      caption=f"{len(table)} patients with RSI, regimen and follow-up; log-rank p = "
                              f"{fmt(p_value)}."))
    return section
