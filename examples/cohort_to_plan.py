"""From a cohort to an optimized plan in one script: synth -> extract -> train -> handoff -> pyRadPlan.

    python examples/cohort_to_plan.py --out chain --patients 24

1. synthesise a cohort (``radiogenomics synth``), 2. extract its feature table (original-image radiomics,
   the cheapest filter set), 3. train and register the models with ``examples/train-quick.yaml`` in a sqlite
   MLflow store under ``--out`` (``champion`` = the first registered version), 4. hand one patient off
   (``prescription.json`` + ``objectives.json`` from ``models:/radiogenomics-prescriber@champion``, with the
   spinal cord as the organ at risk), 5. optimize that ``objectives.json`` with pyRadPlan on its TG119 phantom
   (target OuterTarget, the spinal cord onto Core) and print the DVH summary.

Writes ``OUT/plan/plan_summary.json`` (the DVH summary, iterations, wall time) beside the cohort, feature
table, MLflow store and hand-off folder. Exit status 2 on bad input (the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

from radiogenomics.errors import InputError

log = logging.getLogger("cohort_to_plan")
MODEL_URI = "models:/radiogenomics-prescriber@champion"
TRAIN_CONFIG = Path(__file__).with_name("train-quick.yaml")
OAR = "SpinalCord"
OAR_MAP = {OAR: "Core"}  # TG119 has one organ at risk: the core in the C-shaped target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("cohort_to_plan"), help="folder for every output")
    parser.add_argument("--patients", type=int, default=24,
                        help="synthetic patients (>= 20: training needs 10 with a measured RSI)")
    parser.add_argument("--grid-size", type=int, default=16, help="voxels per axis of the synthetic images")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic cohort")
    parser.add_argument("--workers", type=int, default=1, help="processes for synthesis and extraction")
    parser.add_argument("--patient", default=None, help="patient to plan (default: the first of the table)")
    parser.add_argument("--beams", type=int, default=5, help="equispaced photon beams")
    parser.add_argument("--max-iter", type=int, default=150, help="optimizer iterations at most")
    args = parser.parse_args(argv)
    if args.patients < 20:
        parser.error(f"--patients must be >= 20 (got {args.patients}): about half have a measured RSI")
    return args


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(args: argparse.Namespace) -> dict[str, float]:
    """Every step of the chain; returns the seconds each took."""
    from radiogenomics.demo import tracking_store
    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.features.schema import read_feature_table
    from radiogenomics.planning import handoff, plan_with_pyradplan
    from radiogenomics.synthetic import generate_cohort
    from radiogenomics.training.run import train

    out = args.out.resolve()
    cohort, features = out / "cohort", out / "features.parquet"
    seconds: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), cpu_seconds()

    def lap(step: str) -> None:
        nonlocal started, cpu_started
        seconds[step] = time.perf_counter() - started
        log.info("%-8s %6.1f s (CPU %.1f s)", step, seconds[step], cpu_seconds() - cpu_started)
        started, cpu_started = time.perf_counter(), cpu_seconds()

    generate_cohort(cohort, n_patients=args.patients, seed=args.seed, grid_size=args.grid_size,
                    workers=args.workers, overwrite=True)
    lap("synth")
    extract(cohort, features, ExtractOptions(workers=args.workers, filters=("original",),
                                             cache_dir=out / "cache"))
    lap("extract")
    with tracking_store(out / "mlflow"):
        trained = train(cohort, features, TRAIN_CONFIG, out / "training", progress=False)
        if "radiogenomics-prescriber" not in trained.registered:
            raise InputError(f"training registered no prescriber: {'; '.join(trained.skipped)}",
                             fix="use more --patients")
        lap("train")
        patient = args.patient or str(read_feature_table(features)["patient_id"].iloc[0])
        # no cohort: a dose-prescription map lies on the patient's PET grid, which the TG119 phantom is not
        # (`radiogenomics plan` plans the map on the patient's own CT: examples/plan_cohort.py)
        handed = handoff(MODEL_URI, features, out / "handoff", patients=[patient], oars=[OAR])
    if not handed.patients:
        raise InputError(f"the hand-off wrote nothing for {patient}: {handed.failures}", patient_id=patient)
    objectives = out / "handoff" / patient / "objectives.json"
    lap("handoff")
    plan = plan_with_pyradplan(objectives, oar_map=OAR_MAP, beams=args.beams, max_iter=args.max_iter)
    lap("plan")
    (out / "plan").mkdir(exist_ok=True)
    (out / "plan" / "plan_summary.json").write_text(json.dumps(plan.summary(), indent=1) + "\n")
    record = json.loads((out / "handoff" / patient / "prescription.json").read_text())
    sys.stdout.write(f"{plan.table()}\n")
    sys.stdout.write(f"median target dose {plan.target_median_per_fraction_gy:.3f} Gy per fraction "
                     f"(record: {record['recommended_dose_per_fraction_gy']:.3f} Gy x "
                     f"{record['recommended_n_fractions']:g}, alpha {record['alpha_per_gy']:.3f}/Gy); "
                     f"{plan.iterations} iterations; model {record['model_uri']}\n")
    return seconds


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("pyRadPlan", "mlflow", "alembic", "radiomics", "pykwalify"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        seconds = run(args)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    log.info("total    %6.1f s (CPU %.1f s)", sum(seconds.values()), cpu_seconds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
