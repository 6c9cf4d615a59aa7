# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Does GARD stratify local control?
#
# A retrospective look at one cohort: does the **genomic-adjusted radiation dose** (GARD) of the regimen each
# patient actually received separate the patients whose tumours stayed controlled from those who recurred
# locally?
#
# * **RSI** (Radiosensitivity Index; Eschrich et al., IJROBP 2009;75:489) comes from the ten genes of
#   `expression.csv` (`radiogenomics.radiobiology.score_rsi`: rank-based, no intercept).
# * **GARD** (Scott et al., Lancet Oncol 2017;18:202) is `n d (alpha + beta d)` with
#   `alpha = -ln(RSI)/2 - 2 beta`, `beta = 0.05 Gy^-2`, for the delivered `total_dose_gy` in `n_fractions`
#   fractions (`radiogenomics.radiobiology.gard`). Higher GARD = more expected cell kill.
# * **Local control** is `lc_months` / `lc_event` of `patients.csv` (event = local failure).
#
# What the notebook does (survival statistics from scikit-survival and statsmodels, through the thin glue
# in `notebooks/_survival.py`): Kaplan-Meier curves and a log-rank test for GARD groups split at configurable
# thresholds (default: the cohort median, and **33, a literature value that could not be verified here** --
# published GARD thresholds differ by site and cohort, e.g. >= 42 in an HPV+ oropharynx cohort), a Cox
# proportional-hazards model with GARD as a continuous covariate (hazard ratio per unit GARD, compared with
# the pooled published **HR 0.982 per unit GARD for recurrence**, Scott et al. 2021, 11 cohorts, 1615
# patients), and -- where the cohort has `truth.csv` (synthetic cohorts) -- a calibration-style check of the
# observed local control against the mean true tumour control probability per GARD tertile.
#
# This is an association study on one retrospective cohort. It cannot show that prescribing by GARD
# would change outcomes (see the last cell and `notebooks/README.md`).
#
# **Run** as a script: `python notebooks/gard_local_control.py --cohort COHORT --out OUT`
# (or set `RADIOGENOMICS_COHORT` / `RADIOGENOMICS_NOTEBOOK_OUT`). Without a cohort it generates a
# synthetic one (120 patients, 24^3 voxels) in a temporary folder. In Jupyter: `jupytext --to notebook
# notebooks/gard_local_control.py`, or open the `.py` file directly with the jupytext extension.

# %%
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

import matplotlib

if "ipykernel" not in sys.modules:  # a plain script (or a test): render off-screen
    matplotlib.use("Agg")
import _survival as sv  # notebooks/_survival.py: tidy tables from scikit-survival and statsmodels
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from _common import (  # notebooks/_common.py
    cohort_and_output,
    load_cohort_with_expression,
    notebook_parser,
    parse_notebook_args,
)

from radiogenomics import radiobiology as rb

#: pooled published HR per unit GARD for recurrence (Scott et al. 2021; 11 cohorts, 1615 patients)
PUBLISHED_HR_PER_GARD = 0.982
#: the often-quoted GARD threshold -- *unverified* here; thresholds differ by site and cohort
LITERATURE_GARD_THRESHOLD = 33.0

# %% [markdown]
# ## Parameters
#
# Everything is a command-line option (ignored options, such as the ones Jupyter passes to its kernel, are
# skipped), so the same file runs as a script, in a test and in Jupyter.
#
# | option | default | meaning |
# | --- | --- | --- |
# | `--cohort DIR` | `$RADIOGENOMICS_COHORT`, else a new synthetic cohort | cohort folder (format v1) |
# | `--out DIR` | `$RADIOGENOMICS_NOTEBOOK_OUT`, else a new temporary folder | where the figure and tables go |
# | `--thresholds` | `median,33` | comma-separated GARD split points; `median` = cohort median |
# | `--horizon-months` | 36 | time at which Kaplan-Meier local control is read for the calibration check |
# | `--rsi-missing` | `median` | policy for blank RSI genes (`raise`, `median`, `mean`); imputed patients are counted |
# | `--synthetic-patients`, `--synthetic-grid`, `--seed` | 120, 24, 0 | the synthetic cohort made when none is given |

# %%
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = notebook_parser("Does GARD stratify local control?")
    parser.add_argument("--thresholds", default=f"median,{LITERATURE_GARD_THRESHOLD:g}")
    parser.add_argument("--horizon-months", type=float, default=36.0)
    return parse_notebook_args(parser, argv)


args = parse_args()
cohort_dir, out_dir = cohort_and_output(args, "gard_local_control")

# %% [markdown]
# ## Load the cohort and compute RSI and GARD
#
# `load_cohort` type-checks the tables. RSI needs the ten signature genes; a blank value is imputed only
# under the explicit `--rsi-missing` policy and those patients are counted. RSI values outside the LQ
# domain of GARD (RSI <= 0, or RSI >= exp(-4 beta) ~ 0.82, which would give alpha <= 0) get no GARD and are
# left out of the survival analysis (counted below), never silently turned into a number.

# %%
cohort = load_cohort_with_expression(cohort_dir)
patients = cohort.patients.set_index("patient_id")
scores = rb.score_rsi(cohort.expression, missing=args.rsi_missing)
table = pd.DataFrame({
    "site": patients["site"],
    "total_dose_gy": pd.to_numeric(patients["total_dose_gy"], errors="coerce"),
    "n_fractions": pd.to_numeric(patients["n_fractions"], errors="coerce"),
    "lc_months": pd.to_numeric(patients["lc_months"], errors="coerce"),
    "lc_event": pd.to_numeric(patients["lc_event"], errors="coerce"),
})
table["rsi"] = scores.rsi.reindex(table.index)
table["rsi_imputed"] = table.index.isin(list(scores.imputed_genes))
counts = {"patients": len(table), "rsi_imputed": int(table["rsi_imputed"].sum())}

usable_regimen = table["total_dose_gy"].gt(0) & table["n_fractions"].gt(0) & table["rsi"].notna()
table["gard"] = np.nan
table.loc[usable_regimen, "gard"] = rb.gard(table.loc[usable_regimen, "rsi"].to_numpy(),
                                            table.loc[usable_regimen, "total_dose_gy"].to_numpy(),
                                            table.loc[usable_regimen, "n_fractions"].to_numpy(), invalid="nan")
counts["no_expression_or_regimen"] = int((~usable_regimen).sum())
counts["rsi_outside_lq_domain"] = int((usable_regimen & table["gard"].isna()).sum())
has_outcome = table["lc_months"].notna() & table["lc_event"].isin([0, 1])
counts["no_local_control_data"] = int((~has_outcome).sum())
data = table[table["gard"].notna() & has_outcome].copy()
data["lc_event"] = data["lc_event"].astype(int)
counts["analysed"] = len(data)
counts["events"] = int(data["lc_event"].sum())
if counts["analysed"] < 10 or counts["events"] < 2:
    raise SystemExit(f"too few usable patients ({counts['analysed']}) or events ({counts['events']}) to analyse.")

truth_path = cohort_dir / "truth.csv"
truth = pd.read_csv(truth_path).set_index("patient_id") if truth_path.exists() else None
if truth is not None:
    truth.index = truth.index.map(str)
print(pd.Series(counts, name="count").to_string())
print(data[["rsi", "gard", "total_dose_gy", "n_fractions"]].describe().round(3).to_string())

# %% [markdown]
# ## Kaplan-Meier local control by GARD group, log-rank test
#
# Each threshold splits the patients into `GARD < t` (low) and `GARD >= t` (high). If GARD carries the
# information it should, the high group has better local control. The log-rank test asks whether the two
# curves differ at all; it does not measure how much, and a threshold chosen on the same data (the median
# is) is a description, not a validated cut-off.

# %%
def threshold_value(spec: str, gard: pd.Series) -> tuple[str, float]:
    spec = spec.strip().lower()
    if spec == "median":
        return "median", float(gard.median())
    value = float(spec)
    if not math.isfinite(value):
        raise SystemExit(f"threshold {spec!r} is not a finite number.")
    label = "literature (unverified)" if value == LITERATURE_GARD_THRESHOLD else "user"
    return label, value


@dataclass
class Group:
    n: int
    events: int
    km: pd.DataFrame
    lc_24: float
    lc_horizon: float


@dataclass
class Split:
    name: str
    threshold: float
    kind: str
    groups: dict[str, Group] = field(default_factory=dict)
    logrank: sv.LogRankResult | None = None


splits: list[Split] = []
km_rows: list[pd.DataFrame] = []
for spec in [s.strip() for s in args.thresholds.split(",") if s.strip()]:
    kind, value = threshold_value(spec, data["gard"])
    split = Split(name=f"GARD {value:.1f} ({kind})", threshold=value, kind=kind)
    high = data["gard"] >= value
    data[f"group_{spec.lower()}"] = np.where(high, "high", "low")
    for label, mask in (("low", ~high), ("high", high)):
        sub = data[mask]
        if sub.empty:
            continue
        km = sv.kaplan_meier(sub["lc_months"], sub["lc_event"])
        km_rows.append(km.assign(split=split.name, group=label))
        split.groups[label] = Group(n=len(sub), events=int(sub["lc_event"].sum()), km=km,
                                    lc_24=sv.survival_at(km, 24.0),
                                    lc_horizon=sv.survival_at(km, args.horizon_months))
    if len(split.groups) < 2:
        print(f"{split.name}: all patients on one side of the threshold -- no test.")
    else:
        split.logrank = sv.logrank_test(data["lc_months"], data["lc_event"], np.where(high, "high", "low"))
        print(f"{split.name}: low n={int((~high).sum())}, high n={int(high.sum())}, "
              f"log-rank chi2 = {split.logrank.statistic:.2f}, p = {split.logrank.p_value:.2g}")
    splits.append(split)

# %% [markdown]
# ## Cox proportional hazards: HR per unit GARD
#
# GARD as a continuous covariate (no threshold; statsmodels `PHReg`, Efron ties, Wald CI; Harrell's C from
# scikit-survival). `HR < 1` means each extra unit of GARD lowers the hazard of local failure. Scott et al.
# (2021) pooled 11 cohorts: HR 0.982 per unit GARD for recurrence. Harrell's C says how well GARD ranks the
# patients by time to failure (0.5 = chance). Where truth.csv exists the same
# model is fitted to the *true* GARD (the latent alpha of the generator), which shows how much of the
# association the noise of the expression-based RSI loses.

# %%
@dataclass(frozen=True)
class CoxGard:
    """HR per unit GARD from a one-covariate Cox fit (row ``gard`` of :func:`_survival.cox_table`)."""

    hr: float
    hr_lower: float
    hr_upper: float
    p_wald: float
    p_lr: float
    n: int
    n_events: int


def cox_gard(time: pd.Series, event: pd.Series, gard: pd.Series) -> CoxGard:
    fit = sv.cox_table(time, event, gard.rename("gard"))
    row = fit.loc["gard"]
    return CoxGard(hr=float(row["hr"]), hr_lower=float(row["ci_lower"]), hr_upper=float(row["ci_upper"]),
                   p_wald=float(row["p_wald"]), p_lr=fit.attrs["p_lr"], n=fit.attrs["n"],
                   n_events=fit.attrs["n_events"])


cox = cox_gard(data["lc_months"], data["lc_event"], data["gard"])
# higher GARD = longer local control, so the risk score for Harrell's C is -GARD
c_index = sv.concordance_index(data["lc_months"], data["lc_event"], -data["gard"])
published_in_ci = cox.hr_lower <= PUBLISHED_HR_PER_GARD <= cox.hr_upper
print(f"Cox: HR per unit GARD = {cox.hr:.4f} (95 % CI {cox.hr_lower:.4f}-{cox.hr_upper:.4f}), "
      f"Wald p = {cox.p_wald:.2g}, LR p = {cox.p_lr:.2g}, n = {cox.n}, events = {cox.n_events}, C = {c_index:.3f}")
print(f"published pooled HR {PUBLISHED_HR_PER_GARD} is {'inside' if published_in_ci else 'outside'} this CI")

cox_true = None
if truth is not None and {"alpha_per_gy", "beta_per_gy2"} <= set(truth.columns):
    t_alpha = truth["alpha_per_gy"].reindex(data.index).to_numpy(dtype=float)
    t_beta = truth["beta_per_gy2"].reindex(data.index).to_numpy(dtype=float)
    d_per_fx = data["total_dose_gy"].to_numpy() / data["n_fractions"].to_numpy()
    data["gard_true"] = data["total_dose_gy"].to_numpy() * (t_alpha + t_beta * d_per_fx)
    ok = data["gard_true"].notna()
    if ok.sum() >= 10:
        cox_true = cox_gard(data.loc[ok, "lc_months"], data.loc[ok, "lc_event"], data.loc[ok, "gard_true"])
        print(f"Cox on the true GARD: HR {cox_true.hr:.4f} ({cox_true.hr_lower:.4f}-{cox_true.hr_upper:.4f})")

# %% [markdown]
# ## Calibration-style check (synthetic cohorts: truth.csv)
#
# Patients are grouped by GARD tertile. Per tertile: the mean true tumour control probability of the
# generator (`tcp_true`), the Kaplan-Meier local control at the horizon (observed, censored data) and the
# uncensored truth (fraction without `local_failure`). If the outcome data are consistent with the model
# that generated them, the observed local control should sit near the mean true TCP (failures in the
# generator mostly happen within two years; the 36-month horizon catches nearly all of them), and both
# should rise with GARD.

# %%
calibration = None
if truth is not None and "tcp_true" in truth.columns:
    data["tcp_true"] = truth["tcp_true"].reindex(data.index)
    data["gard_tertile"] = pd.qcut(data["gard"], 3, labels=["T1 (low)", "T2", "T3 (high)"])
    rows = []
    for tertile, sub in data.groupby("gard_tertile", observed=True):
        km = sv.kaplan_meier(sub["lc_months"], sub["lc_event"])
        row = {"gard_tertile": str(tertile), "n": len(sub), "events": int(sub["lc_event"].sum()),
               "gard_min": sub["gard"].min(), "gard_max": sub["gard"].max(),
               "mean_true_tcp": sub["tcp_true"].mean(),
               "km_local_control": sv.survival_at(km, args.horizon_months),
               "km_ci_lower": sv.survival_at(km, args.horizon_months, "ci_lower"),
               "km_ci_upper": sv.survival_at(km, args.horizon_months, "ci_upper")}
        if "local_failure" in truth.columns:
            row["true_control_fraction"] = 1.0 - truth["local_failure"].reindex(sub.index).mean()
        rows.append(row)
    calibration = pd.DataFrame(rows)
    calibration["true_tcp_in_km_ci"] = ((calibration["km_ci_lower"] <= calibration["mean_true_tcp"])
                                        & (calibration["mean_true_tcp"] <= calibration["km_ci_upper"]))
    print(calibration.round(3).to_string(index=False))
else:
    print("no truth.csv with tcp_true: calibration check skipped (real cohorts have no latent truth).")

# %% [markdown]
# ## Figure
#
# Top: the GARD distribution with the split points, and the Kaplan-Meier curves of the first two splits
# (shaded: 95 % log(-log) pointwise CI). Bottom: local control by GARD tertile, the Cox HR per unit GARD
# next to the published pooled HR, and the calibration check.

# %%
COLORS = {"low": "tab:red", "high": "tab:blue"}
TERTILE_COLORS = ["tab:red", "tab:orange", "tab:blue"]


def step_plot(ax: plt.Axes, km: pd.DataFrame, color: str, label: str) -> None:
    ax.step(km["time"], km["survival"], where="post", color=color, label=label)
    ax.fill_between(km["time"], km["ci_lower"], km["ci_upper"], step="post", color=color, alpha=0.15, lw=0)


fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
ax = axes[0, 0]
ax.hist(data["gard"], bins=30, color="0.6")
for split, color in zip(splits, ("k", "tab:green", "tab:purple", "tab:brown"), strict=False):
    ax.axvline(split.threshold, ls="--", color=color, label=split.name)
ax.set_xlabel("GARD of the delivered regimen")
ax.set_ylabel("patients")
ax.set_title(f"GARD (n = {len(data)})")
ax.legend(fontsize=8)
for ax, split in zip(axes[0, 1:], splits[:2], strict=False):
    for label, info in split.groups.items():
        step_plot(ax, info.km, COLORS[label], f"{'GARD >=' if label == 'high' else 'GARD <'} {split.threshold:.1f} "
                                              f"(n={info.n}, events={info.events})")
    lr = split.logrank
    ax.set_title(f"{split.name}\n" + (f"log-rank p = {lr.p_value:.2g}" if lr else "no test"))
for ax in axes[0, 1 + len(splits[:2]):]:
    ax.axis("off")
for ax in (*axes[0, 1:], axes[1, 0]):
    ax.set_xlabel("months from start of RT")
    ax.set_ylabel("local control")
    ax.set_ylim(0, 1.02)
ax = axes[1, 0]
for i, (tertile, sub) in enumerate(data.groupby(pd.qcut(data["gard"], 3, labels=["T1 (low)", "T2", "T3 (high)"]),
                                                observed=True)):
    step_plot(ax, sv.kaplan_meier(sub["lc_months"], sub["lc_event"]), TERTILE_COLORS[i],
              f"GARD {tertile}: {sub['gard'].min():.0f}-{sub['gard'].max():.0f}")
ax.set_title("by GARD tertile")
for ax in (axes[0, 1], axes[0, 2], axes[1, 0]):
    if ax.has_data():
        ax.legend(fontsize=8, loc="lower left")
ax = axes[1, 1]
forest = [("GARD (RSI)", cox.hr, cox.hr_lower, cox.hr_upper, "k")]
if cox_true is not None:
    forest.append(("true GARD", cox_true.hr, cox_true.hr_lower, cox_true.hr_upper, "0.4"))
forest.append(("Scott 2021\npooled", PUBLISHED_HR_PER_GARD, math.nan, math.nan, "tab:green"))
for y, (_label, hr, lo, hi, color) in enumerate(forest):
    if math.isfinite(lo):
        ax.plot([lo, hi], [y, y], color=color, lw=2)
    ax.plot([hr], [y], "o", color=color)
ax.axvline(1.0, color="0.7", ls=":")
ax.set_yticks(range(len(forest)), [f[0] for f in forest])
ax.invert_yaxis()
ax.set_xlabel("hazard ratio of local failure per unit GARD (95 % CI)")
ax.set_title(f"Cox: HR {cox.hr:.3f} ({cox.hr_lower:.3f}-{cox.hr_upper:.3f}), C = {c_index:.2f}")
ax = axes[1, 2]
if calibration is not None:
    ax.errorbar(calibration["mean_true_tcp"], calibration["km_local_control"],
                yerr=[calibration["km_local_control"] - calibration["km_ci_lower"],
                      calibration["km_ci_upper"] - calibration["km_local_control"]], fmt="o", color="k",
                label=f"Kaplan-Meier at {args.horizon_months:g} months")
    if "true_control_fraction" in calibration:
        ax.plot(calibration["mean_true_tcp"], calibration["true_control_fraction"], "s", mfc="none",
                color="tab:purple", label="uncensored truth (1 - local_failure)")
    for _, row in calibration.iterrows():
        ax.annotate(row["gard_tertile"], (row["mean_true_tcp"], row["km_local_control"]), fontsize=8,
                    xytext=(5, -10), textcoords="offset points")
    ax.plot([0, 1], [0, 1], color="0.7", ls=":")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean true TCP (truth.csv)")
    ax.set_ylabel("observed local control")
    ax.set_title("calibration by GARD tertile")
    ax.legend(fontsize=8, loc="upper left")
else:
    ax.text(0.5, 0.5, "no truth.csv:\ncalibration check not available", ha="center", va="center")
    ax.axis("off")
fig.suptitle(f"Does GARD stratify local control? {cohort.meta.get('name', cohort_dir.name)} -- "
             "retrospective association, not evidence for GARD-based prescribing", fontsize=11)
fig.tight_layout()
figure_path = out_dir / "gard_local_control.png"
fig.savefig(figure_path, dpi=110)
if "ipykernel" in sys.modules:
    plt.show()
else:
    plt.close(fig)

# %% [markdown]
# ## Tables and summary
#
# Written to the output folder (all keyed by the cohort's pseudonymous IDs, nothing else identifying):
#
# * `gard_local_control.png` -- the figure above;
# * `gard_local_control_summary.md` / `.json` / `.csv` -- the key numbers;
# * `gard_local_control_km.csv` -- every Kaplan-Meier curve (split, group, time, at risk, survival, CI);
# * `gard_local_control_patients.csv` -- RSI, GARD and groups per patient;
# * `gard_local_control_calibration.csv` -- the tertile check (synthetic cohorts only).

# %%
summary_rows: list[dict[str, object]] = [
    {"analysis": "cohort", "quantity": k, "value": v, "ci_lower": None, "ci_upper": None, "note": ""}
    for k, v in counts.items()]
for split in splits:
    lr = split.logrank
    for label, info in split.groups.items():
        summary_rows.append({"analysis": split.name, "quantity": f"{label}: n / events", "value": info.n,
                             "ci_lower": None, "ci_upper": None,
                             "note": f"{info.events} events; KM LC 24 mo {info.lc_24:.3f}"})
    summary_rows.append({"analysis": split.name, "quantity": "log-rank p", "value": lr.p_value if lr else None,
                         "ci_lower": None, "ci_upper": None,
                         "note": f"chi2 {lr.statistic:.3f} on {lr.dof} df" if lr else "one group only"})
summary_rows += [
    {"analysis": "Cox (GARD continuous)", "quantity": "HR per unit GARD", "value": cox.hr,
     "ci_lower": cox.hr_lower, "ci_upper": cox.hr_upper,
     "note": f"Wald p {cox.p_wald:.3g}; LR p {cox.p_lr:.3g}; Efron ties; published pooled HR "
             f"{PUBLISHED_HR_PER_GARD} {'inside' if published_in_ci else 'outside'} the CI"},
    {"analysis": "Cox (GARD continuous)", "quantity": "Harrell C", "value": c_index, "ci_lower": None,
     "ci_upper": None, "note": "higher GARD = longer local control"},
]
if cox_true is not None:
    summary_rows.append({"analysis": "Cox (true GARD, truth.csv)", "quantity": "HR per unit GARD",
                         "value": cox_true.hr, "ci_lower": cox_true.hr_lower, "ci_upper": cox_true.hr_upper,
                         "note": "oracle: latent alpha of the generator"})
summary = pd.DataFrame(summary_rows)
summary.to_csv(out_dir / "gard_local_control_summary.csv", index=False)
pd.concat(km_rows, ignore_index=True)[["split", "group", "time", "n_at_risk", "n_events", "n_censored", "survival",
                                        "ci_lower", "ci_upper"]].to_csv(out_dir / "gard_local_control_km.csv",
                                                                        index=False)
data.rename_axis("patient_id").to_csv(out_dir / "gard_local_control_patients.csv")
if calibration is not None:
    calibration.to_csv(out_dir / "gard_local_control_calibration.csv", index=False)

result = {
    "cohort": str(cohort_dir), "counts": counts,
    "splits": [{"split": sp.name, "threshold": sp.threshold, "kind": sp.kind,
                "groups": {k: {"n": g.n, "events": g.events, "lc_24": g.lc_24, "lc_horizon": g.lc_horizon}
                           for k, g in sp.groups.items()},
                "logrank_statistic": sp.logrank.statistic if sp.logrank else None,
                "logrank_p": sp.logrank.p_value if sp.logrank else None}
               for sp in splits],
    "cox": {"hr_per_gard": cox.hr, "ci_lower": cox.hr_lower, "ci_upper": cox.hr_upper, "p_wald": cox.p_wald,
            "p_lr": cox.p_lr, "n": cox.n, "events": cox.n_events, "c_index": c_index,
            "published_hr": PUBLISHED_HR_PER_GARD, "published_hr_in_ci": bool(published_in_ci)},
    "cox_true_gard": None if cox_true is None else {"hr_per_gard": cox_true.hr, "ci_lower": cox_true.hr_lower,
                                                    "ci_upper": cox_true.hr_upper},
    "calibration": None if calibration is None else calibration.to_dict(orient="records"),
    "horizon_months": args.horizon_months,
}
(out_dir / "gard_local_control_summary.json").write_text(json.dumps(result, indent=2, default=float))


def fmt(x: object, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}" \
        if isinstance(x, float) else str(x)


md = [f"# Does GARD stratify local control? -- {cohort.meta.get('name', cohort_dir.name)}", "",
      "Retrospective association on one cohort; not evidence that GARD-based prescribing changes outcomes.", "",
      f"Patients {counts['patients']}, analysed {counts['analysed']} ({counts['events']} local failures); "
      f"RSI imputed for {counts['rsi_imputed']}, outside the LQ domain {counts['rsi_outside_lq_domain']}, "
      f"no regimen/expression {counts['no_expression_or_regimen']}, no outcome {counts['no_local_control_data']}.",
      "", "| split | low: n (events) | high: n (events) | KM LC 24 mo low / high | log-rank p |",
      "| --- | --- | --- | --- | --- |"]
for s in result["splits"]:
    g = s["groups"]
    lo, hi = g.get("low", {}), g.get("high", {})
    md.append(f"| {s['split']} | {lo.get('n', 0)} ({lo.get('events', 0)}) | {hi.get('n', 0)} ({hi.get('events', 0)}) "
              f"| {fmt(lo.get('lc_24'))} / {fmt(hi.get('lc_24'))} | {fmt(s['logrank_p'], 2)} |")
md += ["", f"Cox: **HR {cox.hr:.4f} per unit GARD (95 % CI {cox.hr_lower:.4f}-{cox.hr_upper:.4f})**, "
           f"Wald p {cox.p_wald:.2g}, Harrell C {c_index:.3f}. Published pooled HR for recurrence "
           f"{PUBLISHED_HR_PER_GARD} (Scott 2021) is {'inside' if published_in_ci else 'outside'} this CI."]
if cox_true is not None:
    md.append(f"On the true GARD (truth.csv): HR {cox_true.hr:.4f} ({cox_true.hr_lower:.4f}-{cox_true.hr_upper:.4f}).")
md.append(f"The threshold {LITERATURE_GARD_THRESHOLD:g} is an often-quoted literature value, unverified here.")
if calibration is not None:
    md += ["", f"Calibration by GARD tertile (Kaplan-Meier local control at {args.horizon_months:g} months vs "
               "mean true TCP):", "",
           "| tertile | GARD | n | mean true TCP | KM LC (95 % CI) | uncensored truth |",
           "| --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['gard_tertile']} | {r['gard_min']:.1f}-{r['gard_max']:.1f} | {r['n']} | {r['mean_true_tcp']:.3f} "
           f"| {fmt(r['km_local_control'])} ({fmt(r['km_ci_lower'])}-{fmt(r['km_ci_upper'])}) "
           f"| {fmt(r.get('true_control_fraction'))} |" for r in calibration.to_dict(orient="records")]
(out_dir / "gard_local_control_summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
print(f"\nwritten to {out_dir}")

# %% [markdown]
# ## What this does not show
#
# * **Association, not causation.** GARD mixes dose and RSI; in a cohort where dose hardly varies, it is
#   mostly a re-expression of RSI, which also tracks HPV status and other prognostic factors. A low HR says
#   GARD ranks patients, not that raising a patient's GARD with more dose would control the tumour.
# * **No adjustment.** The Cox model has one covariate. HPV status, T stage, centre and treatment
#   (chemotherapy) are not in it; the published HR comes from multi-cohort data with other case mixes,
#   and the comparison with 0.982 is descriptive.
# * **Thresholds.** The median split is chosen on the data (optimistic); 33 is a quoted literature value
#   that was not verified here, and published thresholds differ by site and cohort.
# * **Synthetic cohorts** are generated from the very LQ/TCP model GARD is built on (static tumours, no
#   repopulation), so GARD works better there than in patients; the calibration panel checks the
#   pipeline's consistency with the generator, not clinical calibration.
