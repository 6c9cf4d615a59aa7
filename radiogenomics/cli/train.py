"""`radiogenomics train COHORT [--features F.parquet] [--config TRAIN.yaml] [--out DIR] [--dask ADDRESS]`.

Nested cross-validation of every candidate model per task, tracked in MLflow, winners registered
(:func:`radiogenomics.training.run.train`; with ``--dask`` the nested cross-validations run on a Dask cluster's
workers, :mod:`radiogenomics.training.cluster`, and this process tracks and registers); prints a summary table
of the held-out metrics, the winners, the registered versions and aliases, and where the MLflow store is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from radiogenomics.training.run import TrainSummary


#: The run's DEBUG log in the --out folder (docs/cli.md, "Logging").
LOG_FILE = "train.log"
#: Short names of the held-out metrics in the table.
SHORT = {"calibration_slope": "cal. slope", "calibration_intercept": "cal. int.", "mean_width": "width"}


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def summary_table(summary: TrainSummary) -> Table:
    """Per task: each candidate's own pooled outer-fold metrics (information), and where several competed, the
    held-out metrics of the selection (the candidate chosen by inner CV in each outer fold; what is registered)
    with the final choice."""
    table = Table(title=f"radiogenomics train: held-out metrics ({summary.n_patients} patients); candidate rows "
                        "are each candidate's own outer folds (information), 'selected per fold' rows the task's "
                        "held-out estimate")
    for column in ("task", "candidate", "metric", "held-out", "fold mean (sd)", "other held-out", "time", "winner"):
        table.add_column(column)
    for task in summary.tasks:
        for cand in task.candidates:
            if cand.error:
                table.add_row(task.label, cand.candidate, task.metric, "failed", "", cand.error[:80], "", "")
                continue
            mean = cand.fold_summary.get(f"{task.metric}_mean")
            sd = cand.fold_summary.get(f"{task.metric}_sd")
            others = ", ".join(f"{SHORT.get(k, k)} {_fmt(v)}" for k, v in cand.heldout.items()
                               if k not in (task.metric, "spearman_p"))
            table.add_row(task.label, cand.candidate, task.metric, _fmt(cand.heldout.get(task.metric)),
                          f"{_fmt(mean)} ({_fmt(sd)})", others, f"{cand.fit_s:.0f} s",
                          "*" if cand.candidate == task.winner else "")
        selection = task.selection
        if selection is not None and len(selection.candidates) > 1:
            others = ", ".join(f"{SHORT.get(k, k)} {_fmt(v)}" for k, v in selection.heldout.items()
                               if k not in (task.metric, "spearman_p"))
            table.add_row(task.label, f"selected per fold ({', '.join(selection.per_fold)})", task.metric,
                          _fmt(selection.heldout.get(task.metric)), "", others, "",
                          f"final: {task.winner}" if task.winner else "")
    return table


def registry_table(summary: TrainSummary) -> Table:
    table = Table(title="registered models")
    for column in ("model", "version", "aliases", "decision"):
        table.add_column(column)
    for name, version in summary.registered.items():
        table.add_row(name, str(version.version), ", ".join(version.aliases), version.decision.reason)
    return table


def train(
    cohort: Path = typer.Argument(..., help="Cohort folder (format v1)."),
    features: Path | None = typer.Option(None, "--features", help="Fused feature table (Parquet) of this cohort; "
                                         "default: extract (cached) into OUT/features.parquet."),
    config: Path | None = typer.Option(None, "--config", help="Training configuration (YAML); default: the "
                                       "shipped default_train.yaml."),
    out: Path = typer.Option(Path("training"), "--out", help="Folder for features, Optuna studies, "
                             "out-of-fold predictions and the run's log train.log."),
    dask: str | None = typer.Option(None, "--dask", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786: the "
                                    "outer folds and final fits of every candidate run on its workers; this "
                                    "process logs to MLflow and registers."),
) -> None:
    """Train radiosensitivity and toxicity models with grouped nested CV; track in MLflow; register the winner."""
    from radiogenomics.cli.logs import run_log
    from radiogenomics.outputs import output_dir
    from radiogenomics.training.run import train as run_train

    with run_log(output_dir(out, "training folder").resolve() / LOG_FILE):
        summary = run_train(cohort, features, config, out, progress=True, dask_address=dask)
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    console.print(summary_table(summary))
    if summary.registered:
        console.print(registry_table(summary))
    for line in summary.skipped:
        typer.echo(f"note: {line}", err=True)
    typer.echo(f"MLflow run {summary.run_id} in experiment {summary.experiment!r}, store {summary.tracking_uri}")
    typer.echo(f"out-of-fold predictions: {summary.run_dir / 'oof'}")
    typer.echo(f"open the MLflow UI: {summary.ui_command}")
    typer.echo(f"wall time {summary.wall_s:.0f} s, peak memory {summary.peak_rss_mb:.0f} MiB")
