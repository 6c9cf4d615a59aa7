"""`radiogenomics demo`: the whole product on a synthetic cohort (:mod:`radiogenomics.demo`), with a summary."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import typer

from radiogenomics.cli.console import out

#: The demo's DEBUG log (docs/cli.md, "Logging").
LOG_FILE = "demo.log"


def demo(
    out_dir: Path = typer.Option(Path("demo"), "--out", help="Folder for the demo cohort and every output."),
    patients: int = typer.Option(100, "--patients", help="Synthetic training patients (>= 10)."),
    new_patients: int = typer.Option(8, "--new-patients", help="Further synthetic patients held out of training "
                                     "and predicted as new patients."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the synthetic cohort."),
    grid_size: int = typer.Option(64, "--grid-size", help="Voxels per axis of the synthetic images."),
    workers: int = typer.Option(2, "--workers", help="Processes for synthesis and feature extraction."),
    plan: bool = typer.Option(True, "--plan/--no-plan", help="Plan the new patients on their anatomy (pyRadPlan)."),
    stop_after: str | None = typer.Option(None, "--stop-after", help="Stop after 'validate' or 'extract' "
                                          "(data preparation only; then any --patients >= 1 works)."),
) -> None:
    """Synthesise, validate, extract, train and register, predict new patients, hand off to the optimizer,
    plan with pyRadPlan and write the HTML report; print where every output is and the time of each step.

    Example: radiogenomics demo --out demo --patients 24 --new-patients 4 --grid-size 16
    """
    from radiogenomics.cli.logs import run_log
    from radiogenomics.demo import DemoOptions, run_demo

    options = DemoOptions(patients=patients, new_patients=new_patients, seed=seed, grid_size=grid_size,
                          workers=workers, plan=plan, stop_after=stop_after)
    with ExitStack() as stack:  # the log file opens in the demo folder once the demo has checked it
        result = run_demo(out_dir, options, announce=out.print,
                          on_folder=lambda folder: stack.enter_context(run_log(folder / LOG_FILE)))
    typer.echo("demo done")
    for i, step in enumerate(result.steps, start=1):
        typer.echo(f"  {i}. {step.name:<26} {step.seconds:7.1f} s  {step.summary}")
    typer.echo(f"  total wall time {result.wall_s:.1f} s")
    typer.echo("outputs:")
    for step in result.steps:
        for label, path in step.outputs.items():
            typer.echo(f"  {label:<30} {path}")
    if result.ui_command is None:
        typer.echo(f"stopped after {stop_after}: no models, predictions or report")
        return
    typer.echo(f"open the MLflow UI: {result.ui_command}")
    typer.echo(f"open the report in a browser: {result.out_dir / 'report.html'}")
