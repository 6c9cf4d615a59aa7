"""Model-performance section: the registered model version's training run, read back from MLflow.

Nothing is re-fitted. From the run that registered the version (``radiogenomics train``) the section takes:

* the winner of each task (run tags ``winner.<task>``) and every candidate's pooled held-out selection metric
  (run metrics ``<task>/<candidate>/heldout.<metric>``);
* the per-fold metrics table of each winner (artifact ``<task>/<winner>/fold_metrics.csv``), with the fold
  mean, SD and the pooled held-out value (run metrics);
* figures re-drawn from the winner's logged out-of-fold predictions (artifact ``oof_predictions.csv``) with
  :mod:`radiogenomics.training.plots`: the calibration curve of each toxicity endpoint, measured against
  predicted RSI with its conformal intervals, and the per-fold coverage of the 90 % conformal intervals
  against the registry's accepted band (run parameter ``registry.coverage_band``).

A version registered outside ``train`` has no such record: the section lists the version's ``heldout.*`` tags
and says so.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.report import figures
from radiogenomics.report.sections import Figure, Paragraph, Section, Table, fmt

log = logging.getLogger(__name__)

KEY, TITLE = "model", "Model performance"
#: Nominal level of the RSI prediction intervals (contract section 2: 90 % prediction interval).
NOMINAL_COVERAGE = 0.9


@dataclass(frozen=True)
class ModelVersion:
    """A resolved registry entry: name, version, alias (if the URI named one), its run and its tags."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    tags: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}" + (f" (@{self.alias})" if self.alias else "")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; InputError otherwise."""
    from radiogenomics.training.registry import parse_registry_uri

    parsed = parse_registry_uri(uri)
    if parsed is None:
        raise InputError(f"--model {uri!r} is not a registry URI",
                         fix="give models:/radiogenomics-prescriber@champion or models:/NAME/VERSION")
    return parsed


def resolve_version(client: Any, uri: str) -> ModelVersion:
    """The registry entry of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; InputError otherwise."""
    name, alias, version = parse_model_uri(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except Exception as exc:  # MlflowException RESOURCE_DOES_NOT_EXIST and store errors
        raise InputError(f"cannot find {uri} in the registry: {' '.join(str(exc).split())[:200]}",
                         fix="set MLFLOW_TRACKING_URI to the store `radiogenomics train` used") from exc
    return ModelVersion(name, str(mv.version), alias, mv.run_id, dict(mv.tags or {}))


def model_section(model_uri: str) -> Section:
    """The section for ``model_uri`` (see the module docstring)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    from radiogenomics.training.config import TrackingConfig

    parse_model_uri(model_uri)  # a malformed URI is refused before any store is opened
    if not is_tracking_uri_set():
        mlflow.set_tracking_uri(TrackingConfig().tracking_uri())
    client = mlflow.MlflowClient()
    version = resolve_version(client, model_uri)
    section = Section(KEY, TITLE)
    section.add(Paragraph(f"{version.label}, registered from MLflow run {version.run_id or 'none'} in "
                          f"{mlflow.get_tracking_uri()}."))
    run = client.get_run(version.run_id) if version.run_id else None
    from radiogenomics.training.run import TASK_SCORER

    # winner.<task> per task (toxicity.<endpoint> included); winner.registered_radiosensitivity names the RSI
    # model chosen across tasks, not a task of its own
    winners = {k.removeprefix("winner."): v for k, v in (run.data.tags if run else {}).items()
               if k.startswith("winner.") and v != "none" and k.removeprefix("winner.").split(".")[0] in TASK_SCORER}
    if run is None or not winners:
        return _tags_only(section, version)
    section.add(Paragraph("Held-out metrics of grouped nested cross-validation as logged by `radiogenomics "
                          "train`; the figures are re-drawn from the run's logged out-of-fold predictions "
                          "(nothing is re-fitted).", kind="note"))
    section.add(_candidates_table(run.data.metrics, winners))
    with tempfile.TemporaryDirectory(prefix="radiogenomics-report-") as tmp:
        for task, winner in sorted(winners.items()):
            _winner_blocks(section, client, run, task, winner, Path(tmp))
    return section


def _tags_only(section: Section, version: ModelVersion) -> Section:
    metrics = {k.removeprefix("heldout."): v for k, v in version.tags.items() if k.startswith("heldout.")}
    section.add(Paragraph("This version's run holds no nested cross-validation record (it was registered "
                          "outside `radiogenomics train`): only the held-out metrics stored on the version are "
                          "shown; no per-fold table, calibration curve or coverage plot is available.",
                          kind="note"))
    if metrics:
        section.add(Table(["metric", "held-out value"], [[k, fmt(float(v))] for k, v in sorted(metrics.items())],
                          caption="Version tags heldout.* (what the promotion rule compares)."))
    return section


def _candidates_table(metrics: dict[str, float], winners: dict[str, str]) -> Table:
    from radiogenomics.training.run import TASK_SCORER
    from radiogenomics.training.selection import SELECTION_NAME

    rows: list[list[str]] = []
    for key, value in sorted(metrics.items()):
        parts = key.split("/")
        if len(parts) != 3 or not parts[2].startswith("heldout.") or parts[0] not in winners:
            continue
        metric = parts[2].removeprefix("heldout.")
        if metric != TASK_SCORER.get(parts[0].split(".")[0]):  # the task's selection metric only
            continue
        if parts[1] == SELECTION_NAME:
            rows.append([parts[0], "selection inside the nested loop (registered)", metric, fmt(value), ""])
            continue
        rows.append([parts[0], parts[1], metric, fmt(value), "yes" if winners[parts[0]] == parts[1] else ""])
    return Table(["task", "candidate", "selection metric", "pooled held-out", "winner"], rows,
                 caption="Each candidate's own pooled out-of-fold metric (for information: choosing the best of "
                         "these would be optimistic) and the selection procedure's (a candidate chosen per outer "
                         "fold on inner CV only): its held-out metrics are the registered ones; the winner, chosen "
                         "by the same rule on all patients and refitted, is the model registered.")


def _artifact(client: Any, run_id: str, path: str, tmp: Path) -> Path | None:
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    previous = os.environ.get(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
    os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"  # no tqdm bar per small file
    try:
        return Path(client.download_artifacts(run_id, path, str(tmp)))
    except Exception as exc:  # a missing artifact: MlflowException or OSError depending on the store
        log.info("artifact %s of run %s not available: %s", path, run_id, exc)
        return None
    finally:
        if previous is None:
            os.environ.pop(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, None)
        else:
            os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = previous


def _winner_blocks(section: Section, client: Any, run: Any, task: str, winner: str, tmp: Path) -> None:
    prefix = f"{task}/{winner}"
    metrics = run.data.metrics
    section.add(Paragraph(f"{task}: {winner}", kind="subhead"))
    folds_path = _artifact(client, run.info.run_id, f"{prefix}/fold_metrics.csv", tmp)
    if folds_path is not None:
        folds = pd.read_csv(folds_path, index_col=0)
        names = [c for c in folds.columns if not c.startswith("inner_") and not c.endswith("_p")]
        rows = [[str(i), *(fmt(float(v)) for v in folds.loc[i, names])] for i in folds.index]
        rows.append(["mean \u00b1 SD", *(f"{fmt(metrics.get(f'{prefix}/{m}_mean'))} \u00b1 "
                                         f"{fmt(metrics.get(f'{prefix}/{m}_sd'))}" for m in names)])
        rows.append(["pooled held-out", *(fmt(metrics.get(f"{prefix}/heldout.{m}")) for m in names)])
        section.add(Table(["outer fold", *names], rows,
                          caption=f"{task}: winner {winner}, metrics per outer (test) fold, their mean and SD, "
                                  "and the metric of all out-of-fold predictions pooled."))
    oof_path = _artifact(client, run.info.run_id, f"{prefix}/oof_predictions.csv", tmp)
    if oof_path is None:
        section.add(Paragraph(f"{task}: the run has no out-of-fold predictions; no figure.", kind="note"))
        return
    oof = pd.read_csv(oof_path)
    oof = oof[oof["fold"] >= 0]
    if task.startswith("toxicity.") and oof["y_true"].nunique() == 2:
        _calibration(section, task, winner, oof)
    elif {"lower", "upper"} <= set(oof.columns):
        _rsi_figures(section, task, winner, oof, folds_path, run, metrics.get(f"{prefix}/heldout.coverage"))


def _calibration(section: Section, task: str, winner: str, oof: pd.DataFrame) -> None:
    from radiogenomics.training import plots

    endpoint = task.removeprefix("toxicity.")
    fig = plots.calibration_figure(oof["y_true"], oof["y_pred"],
                                   title=f"Calibration: {endpoint} grade \u2265 2 ({winner})")
    ax = fig.axes[0]
    ax.set_xlabel("mean predicted probability of grade \u2265 2")
    ax.set_ylabel("observed proportion with grade \u2265 2")
    section.add(Figure(figures.data_uri(fig), alt=f"calibration curve of the {endpoint} toxicity model",
                       caption=f"Calibration of the out-of-fold P({endpoint} grade \u2265 2), {len(oof)} "
                               "patients in quantile bins; the dashed line is perfect calibration."))


def _rsi_figures(section: Section, task: str, winner: str, oof: pd.DataFrame, folds_path: Path | None, run: Any,
                 pooled: float | None) -> None:
    from radiogenomics.training import plots

    fig = plots.predicted_vs_true_figure(oof["y_true"], oof["y_pred"], lower=oof["lower"], upper=oof["upper"],
                                         title=f"Out-of-fold RSI ({task}, {winner})")
    ax = fig.axes[0]
    ax.set_xlabel("measured RSI (surviving fraction at 2 Gy)")
    ax.set_ylabel("predicted RSI (surviving fraction at 2 Gy)")
    ax.plot([], [], color="lightgrey", label="90 % conformal interval")
    ax.plot([], [], ls="--", color="grey", label="identity")
    ax.legend(loc="upper left", fontsize=8)
    section.add(Figure(figures.data_uri(fig), alt="predicted against measured RSI with conformal intervals",
                       caption="Each patient's out-of-fold predicted RSI with its 90 % conformal interval."))
    if folds_path is None:
        return
    folds = pd.read_csv(folds_path, index_col=0)
    if "coverage" not in folds.columns:
        return
    band: tuple[float, float] | None = None
    raw = run.data.params.get("registry.coverage_band")  # logged as JSON, e.g. "[0.85, 0.95]"
    try:
        low, high = json.loads(raw)
        band = (float(low), float(high))
    except (ValueError, TypeError):
        band = None
    section.add(Figure(figures.data_uri(figures.coverage_by_fold(
        list(folds.index), folds["coverage"].astype(float).tolist(), nominal=NOMINAL_COVERAGE, band=band,
        pooled=pooled)), alt="bar chart of conformal coverage per outer fold",
        caption="Share of held-out patients whose measured RSI lies inside the 90 % conformal interval, per "
                "outer fold, with the nominal level, the pooled value and the registry's accepted band."))
