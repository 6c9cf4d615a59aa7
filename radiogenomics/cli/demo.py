"""`radiogenomics demo`: the whole product, as far as this release goes, on a synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from radiogenomics.cli.console import out, progress_bar
from radiogenomics.errors import InputError
from radiogenomics.outputs import output_dir


def demo(
    out_dir: Path = typer.Option(Path("demo"), "--out", help="Folder for the demo cohort and its outputs."),
    patients: int = typer.Option(40, "--patients", help="Number of synthetic patients."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    grid_size: int = typer.Option(64, "--grid-size", help="Voxels per axis of the synthetic images."),
) -> None:
    """Generate a synthetic head-and-neck cohort, validate it, and extract its fused feature table.

    Example: radiogenomics demo --out demo --patients 20
    """
    from radiogenomics.cohort import validate_cohort
    from radiogenomics.synthetic import generate_cohort

    if patients < 1:
        raise InputError(f"--patients must be >= 1 (got {patients}).")
    output_dir(out_dir, "demo folder")
    cohort = out_dir / "cohort"
    steps: list[str] = []
    wanted = {"seed": seed, "n_patients": patients, "grid_size": grid_size}
    on_disk = _generator_options(cohort)
    if on_disk == wanted:
        out.print(f"[1/3] reusing the synthetic cohort in {cohort}")
        steps.append(f"reused synthetic cohort {cohort}")
    else:
        if on_disk is not None:
            out.print(f"[1/3] the cohort in {cohort} was made with {on_disk}; regenerating it with {wanted}")
        with progress_bar("synthesising patients") as update:
            generate_cohort(cohort, n_patients=patients, seed=seed, grid_size=grid_size, workers=2,
                            progress=update, overwrite=on_disk is not None)
        steps.append(f"synthesised {patients} patients (seed {seed}, {grid_size}^3 voxels) into {cohort}")
    with progress_bar("validating") as update:
        report = validate_cohort(cohort, progress=update)
    steps.append(f"validated: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    if not report.ok:
        raise InputError(f"the demo cohort failed validation: {report.errors[0].one_line()}")
    from radiogenomics.features.pipeline import ExtractOptions, extract

    summary = extract(cohort, out_dir / "features.parquet", ExtractOptions(workers=2))
    steps.append(f"extracted features: {summary.one_line()}")
    out.print("[bold]demo done:[/bold]")
    for i, step in enumerate(steps, start=1):
        out.print(f"  {i}. {step}")
    out.print("Not in this release yet: train, predict, serve (models, registry and serving land next).")


def _generator_options(cohort: Path) -> dict[str, object] | None:
    """Seed, size and grid of the synthetic cohort in ``cohort`` (from its cohort.yaml), or None when empty.

    A non-empty folder that is not a cohort written by ``radiogenomics synth`` is an error: the demo never
    overwrites data it did not generate.
    """
    if not cohort.exists() or (cohort.is_dir() and not any(cohort.iterdir())):
        return None
    meta_path = cohort / "cohort.yaml"
    generator = None
    if meta_path.is_file():
        try:
            meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            meta = None
        generator = meta.get("generator") if isinstance(meta, dict) else None
    if not isinstance(generator, dict) or generator.get("module") != "radiogenomics.synthetic":
        raise InputError(f"{cohort} holds files that the demo did not generate.", file=str(cohort),
                         fix="choose another --out folder for the demo.")
    return {key: generator.get(key) for key in ("seed", "n_patients", "grid_size")}
