"""Plans section: the personalised plans on the patients' own anatomy against the standard uniform plan.

From ``--plans DIR`` (the ``--out`` folder of ``radiogenomics plan``): the Lazzeroni-style table of
``DIR/summary.csv`` (planned TCP of the standard uniform plan and of the personalised plan with its range over the
RSI interval, NTCP per endpoint, hard rails, time; docs/planning.md), the share of patients with planned TCP >= 0.9
and every hard rail met, and for one patient (the first painted plan) a planned-dose slice over the CT with the
structures' outlines and the DVHs of both plans. Every number is read from the plan evaluations; nothing is
recomputed here but the DVH curves, from the written dose files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.report import figures
from radiogenomics.report.sections import Figure, Paragraph, Section, Table, fmt

log = logging.getLogger(__name__)

KEY, TITLE = "plans", "Plans on the patients' anatomy"
CT_WINDOW_HU = (-160.0, 240.0)


def _evaluations(plans_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(plans_dir.glob("*/plan_evaluation.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("report: cannot read %s: %s", path, exc)
    return out


def _table(summary: pd.DataFrame) -> Table:
    ntcp = [c for c in summary.columns if c.startswith("ntcp_") and not c.endswith("_uniform")]
    columns = ["patient", "regimen", "painting", "TCP standard", "TCP personalised (RSI range)",
               *[f"NTCP {c[5:]} (standard -> personalised)" for c in ntcp], "hard rails met", "converged", "s"]
    rows = []
    for _, r in summary.iterrows():
        rng = f"{fmt(r.get('tcp_planned'))} ({fmt(r.get('tcp_planned_low'))}-{fmt(r.get('tcp_planned_high'))})"
        rows.append([str(r["patient_id"]), str(r["regimen"]), str(r["painting"]), fmt(r.get("tcp_uniform_reference")),
                     rng, *[f"{fmt(r.get(f'{c}_uniform'))} -> {fmt(r.get(c))}" for c in ntcp],
                     _yes_no(r.get("hard_rails_met")), _yes_no(r.get("converged")),
                     _seconds(r.get("seconds"))])
    return Table(columns, rows, caption="Planned TCP with the patient's alpha, FDG clonogen density and FMISO pO2 "
                                        "(Poisson, Webb & Nahum 1993); NTCP: LKB from the planned organ doses (EQD2); "
                                        "\u2013: not recorded.",
                 highlight=[_flag(r.get("hard_rails_met")) is False for _, r in summary.iterrows()])


def _flag(value: Any) -> bool | None:
    """A summary.csv yes/no column as a bool; None when missing or NaN (not recorded: neither yes nor no)."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None
    return bool(value)


def _yes_no(value: Any) -> str:
    flag = _flag(value)
    return fmt(None) if flag is None else "yes" if flag else "no"


def _seconds(value: Any) -> str:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return fmt(None) if pd.isna(number) else f"{float(number):.0f}"


def _synthetic(cohort: Any | None) -> bool:
    """Whether the cohort was written by ``radiogenomics synth`` (its cohort.yaml names the generator)."""
    generator = (getattr(cohort, "meta", None) or {}).get("generator")
    return isinstance(generator, dict) and generator.get("module") == "radiogenomics.synthetic"


def _patient_figures(section: Section, plans_dir: Path, cohort: Any, pid: str, evaluation: dict[str, Any]) -> None:
    import SimpleITK as sitk

    from radiogenomics.planning.anatomy import load_anatomy

    names = {s["name"]: s["role"] for s in evaluation["structures"] if s["role"] != "external"}
    anatomy = load_anatomy(cohort, pid, names)
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(plans_dir / pid / "plan_dose.nii.gz"))).astype(float)
    uniform_path = plans_dir / pid / "uniform_reference_dose.nii.gz"
    uniform = sitk.GetArrayFromImage(sitk.ReadImage(str(uniform_path))).astype(float) if uniform_path.is_file() \
        else None
    target = next(s["name"] for s in evaluation["structures"] if s["role"] == "target")
    z = int(round(float(np.argwhere(anatomy.masks[target])[:, 0].mean())))
    spacing = anatomy.ct.GetSpacing()
    ct = sitk.GetArrayFromImage(anatomy.ct).astype(float)
    order = [target, *[n for n in names if n != target and n in anatomy.masks]]
    section.add(Paragraph(f"Patient {pid}: axial slice {z} through the target's centre; planned with "
                          f"{evaluation['optimizer']['name']} {evaluation['optimizer']['version']} "
                          f"({evaluation['settings'].get('beams')} beams, {evaluation['optimizer']['iterations']} "
                          f"iterations, {'converged' if evaluation['optimizer']['converged'] else 'not converged'})."))
    section.add(Figure(figures.data_uri(figures.planned_dose_slice(
        dose[z], spacing_mm=(spacing[1], spacing[0]), title=f"Planned dose, patient {pid} ({evaluation['painting']})",
        outlines={n: anatomy.masks[n][z] for n in order}, underlay=np.clip(ct[z], *CT_WINDOW_HU))),
        alt=f"axial slice of the planned dose of patient {pid} with structure outlines",
        caption="Planned total dose (Gy, shown above 1 Gy) over the CT (soft-tissue window), structure outlines."))
    curves = {n: [dose[anatomy.masks[n]], *([uniform[anatomy.masks[n]]] if uniform is not None else [])]
              for n in order}
    section.add(Figure(figures.data_uri(figures.cumulative_dvhs(curves, title=f"DVHs, patient {pid}")),
                       alt=f"cumulative DVHs of patient {pid}",
                       caption="Cumulative DVHs: personalised plan (solid) and standard uniform plan (dashed)."))
    violations = evaluation.get("violations") or []
    if violations:
        section.add(Paragraph("Rails not met: " + "; ".join(v["text"] for v in violations), kind="note"))


def plans_section(plans_dir: Path | None, cohort: Any | None) -> Section:
    """The section (module docstring); says what is missing when there are no plans."""
    if plans_dir is None:
        return Section(KEY, TITLE, missing="no plans given: pass --plans DIR (the output of radiogenomics plan).")
    summary_path = plans_dir / "summary.csv"
    evaluations = _evaluations(plans_dir)
    if not summary_path.is_file() or not evaluations:
        return Section(KEY, TITLE, missing=f"{plans_dir} holds no plans (summary.csv and */plan_evaluation.json).")
    summary = pd.read_csv(summary_path)
    section = Section(KEY, TITLE)
    manifest_path = plans_dir / "plans.json"
    share = json.loads(manifest_path.read_text()).get("share_tcp_ge_0_9_hard_rails_met") \
        if manifest_path.is_file() else None
    section.add(Paragraph(
        f"{len(summary)} patient(s) planned on their own CT and structures; median planned TCP: standard uniform "
        f"plan {fmt(pd.to_numeric(summary['tcp_uniform_reference'], errors='coerce').median())}, personalised "
        f"{fmt(pd.to_numeric(summary['tcp_planned'], errors='coerce').median())}; TCP >= 0.9 with every hard rail "
        f"met: {'-' if share is None else f'{100 * float(share):.0f} %'}. "
        f"{'Synthetic cohort, photon' if _synthetic(cohort) else 'Photon'} IMRT: compare "
        "with Lazzeroni et al. (J Nucl Med 2026) only as docs/planning.md explains."))
    section.add(_table(summary))
    painted = [pid for pid, e in evaluations.items() if e.get("painting") == "dose_map"]
    pid = (painted or list(evaluations))[0]
    if cohort is None:
        section.add(Paragraph("no cohort given: no planned-dose slice or DVHs (pass --cohort).", kind="note"))
        return section
    try:
        _patient_figures(section, plans_dir, cohort, pid, evaluations[pid])
    except Exception as exc:  # a figure must not take the report down: say why it is missing
        log.warning("report: no plan figures for %s: %s", pid, exc)
        section.add(Paragraph(f"no plan figures for {pid}: {exc}", kind="note"))
    return section
