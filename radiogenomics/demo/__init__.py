"""`radiogenomics demo`: the whole product on a synthetic head-and-neck cohort, in one folder.

Steps (each timed; the slow ones draw a progress bar on a terminal):

1. **synth**: ``patients + new_patients`` synthetic patients into ``DIR/cohort`` (reused when the same options
   made it; :func:`radiogenomics.synthetic.generate_cohort`);
2. **validate** the cohort;
3. **extract** the fused feature table ``DIR/features-all.parquet``, split into the training table
   ``DIR/features.parquet`` (the first ``patients``) and the held-out "new" patients'
   ``DIR/new-patients.features.parquet`` (the last ``new_patients``; never seen by training);
4. **train** with the shipped ``demo_train.yaml`` (grouped nested CV, Optuna, MLflow) and **register** the
   models in the local store ``DIR/mlflow/mlflow.db`` (artifacts in ``DIR/mlflow/mlartifacts``), which
   ``MLFLOW_TRACKING_URI`` points at for the duration;
5. **predict** the new patients with ``models:/radiogenomics-prescriber@champion`` -> ``DIR/prescriptions.csv``;
6. **hand-off** (:func:`radiogenomics.planning.handoff`) -> ``DIR/handoff/<patient>/``
   (prescription.json, objectives.json, dose_prescription.nii.gz + .dcm from the patient's PET);
7. **plan** every new patient on their own CT and structures (:func:`radiogenomics.planning.plan_cohort`: photon
   IMRT with pyRadPlan, dose painting by numbers where the hand-off has a map, the site's standard uniform plan for
   comparison) -> ``DIR/plans/<patient>/`` (planned dose, RTDOSE, plan_evaluation.json) and ``DIR/plans/summary.csv``,
   the personalised-vs-standard table (docs/planning.md); the TG-119 phantom stays an example
   (``examples/cohort_to_plan.py``);
8. **report** -> ``DIR/report.html`` (with the plans).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).with_name("demo_train.yaml")
MODEL_URI = "models:/radiogenomics-prescriber@champion"
EXPERIMENT = "radiogenomics"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
#: Where ``--stop-after`` may stop (None: run every step).
STOP_AFTER: tuple[str | None, ...] = (None, "validate", "extract")


@dataclass
class DemoOptions:
    """What to run: sizes, seed, grid, worker processes and whether to plan with pyRadPlan."""

    patients: int = 100
    new_patients: int = 8
    seed: int = 0
    grid_size: int = 64
    workers: int = 2
    plan: bool = True
    #: Stop after this step: None (run everything), "validate" or "extract" (data preparation only).
    stop_after: str | None = None


@dataclass
class StepResult:
    """One demo step: its name, wall time, a one-line summary and the outputs it wrote (label -> path)."""

    name: str
    seconds: float
    summary: str
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass
class DemoResult:
    """Every step of a demo run and the command that opens the MLflow UI on its store."""

    out_dir: Path
    steps: list[StepResult]
    tracking_uri: str | None  #: None when the run stopped before training

    @property
    def ui_command(self) -> str | None:
        return None if self.tracking_uri is None else f"mlflow ui --backend-store-uri {self.tracking_uri}"

    @property
    def wall_s(self) -> float:
        return sum(s.seconds for s in self.steps)


Announce = Callable[[str], None]


class _Steps:
    """Runs and times the steps; ``announce`` prints a line as each one starts."""

    def __init__(self, total: int, announce: Announce) -> None:
        self.total, self.announce = total, announce
        self.done: list[StepResult] = []

    @contextmanager
    def step(self, name: str) -> Iterator[StepResult]:
        self.announce(f"[{len(self.done) + 1}/{self.total}] {name}")
        result = StepResult(name, 0.0, "")
        started = time.monotonic()
        yield result
        result.seconds = time.monotonic() - started
        self.done.append(result)


def generator_options(cohort: Path) -> dict[str, object] | None:
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


@contextmanager
def tracking_store(mlflow_dir: Path) -> Iterator[str]:
    """Point ``MLFLOW_TRACKING_URI`` (and mlflow) at ``mlflow_dir/mlflow.db`` with artifacts beside it; restore."""
    import mlflow

    mlflow_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(mlflow_dir / 'mlflow.db').resolve()}"
    previous = os.environ.get(TRACKING_ENV)
    os.environ[TRACKING_ENV] = uri
    mlflow.set_tracking_uri(uri)
    try:
        client = mlflow.MlflowClient(uri)
        if client.get_experiment_by_name(EXPERIMENT) is None:  # artifacts in DIR/mlflow, not ./mlruns
            client.create_experiment(EXPERIMENT, artifact_location=(mlflow_dir / "mlartifacts").resolve().as_uri())
        yield uri
    finally:
        if previous is None:
            os.environ.pop(TRACKING_ENV, None)
        else:
            os.environ[TRACKING_ENV] = previous
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it


def _split_features(cohort: Path, all_path: Path, train_path: Path, new_path: Path,
                    n_train: int) -> tuple[list[str], list[str]]:
    """Write the rows of the first ``n_train`` patients of patients.csv and the rest as two feature tables with
    the same schema."""
    import pandas as pd

    from radiogenomics.features.fusion import write_parquet
    from radiogenomics.features.schema import read_feature_schema, read_feature_table

    ids = pd.read_csv(cohort / "patients.csv", usecols=["patient_id"], dtype=str)["patient_id"].tolist()
    table = read_feature_table(all_path)
    metadata = read_feature_schema(all_path).to_metadata()
    training = table["patient_id"].astype(str).isin(ids[:n_train])
    train, new = table[training].reset_index(drop=True), table[~training].reset_index(drop=True)
    write_parquet(train, train_path, metadata)
    write_parquet(new, new_path, metadata)
    return [str(p) for p in train["patient_id"]], [str(p) for p in new["patient_id"]]


def run_demo(out_dir: Path, options: DemoOptions, *, announce: Announce = log.info,
             on_folder: Callable[[Path], object] | None = None) -> DemoResult:
    """Run every step into ``out_dir`` (see the module docstring). ``on_folder`` is called with the demo folder
    once it is checked and created, before the first step (the command line opens its log file there)."""
    from radiogenomics.outputs import output_dir
    from radiogenomics.progress import progress_bar

    if options.stop_after not in STOP_AFTER:
        raise InputError(f"--stop-after must be one of {', '.join(s for s in STOP_AFTER if s)}, "
                         f"got {options.stop_after!r}")
    if out_dir.exists() and not out_dir.is_dir():
        output_dir(out_dir, "demo folder")  # the path error naming the file
    cohort = out_dir / "cohort"
    on_disk = generator_options(cohort)  # a folder the demo did not make is refused before anything runs
    training = options.stop_after is None
    if options.patients < (10 if training else 1):
        raise InputError(f"--patients must be >= 10 (got {options.patients}): training needs at least 10 "
                         "patients with a measured RSI", fix="use --patients 24 or more, or --stop-after extract")
    if options.new_patients < (1 if training else 0):
        raise InputError(f"--new-patients must be >= 1 (got {options.new_patients})")
    out_dir = output_dir(out_dir, "demo folder").resolve()
    if on_folder is not None:
        on_folder(out_dir)
    cohort = out_dir / "cohort"
    steps = _Steps({None: 8 if options.plan else 7, "validate": 2, "extract": 3}[options.stop_after], announce)
    total = options.patients + options.new_patients
    with steps.step("synthesise the cohort") as step:
        wanted = {"seed": options.seed, "n_patients": total, "grid_size": options.grid_size}
        if on_disk == wanted:
            step.summary = f"reusing the synthetic cohort ({total} patients)"
        else:
            from radiogenomics.synthetic import generate_cohort

            with progress_bar("synthesising patients") as update:
                generate_cohort(cohort, n_patients=total, seed=options.seed, grid_size=options.grid_size,
                                workers=options.workers, progress=update, overwrite=on_disk is not None)
            step.summary = (f"{total} patients (seed {options.seed}, {options.grid_size}^3 voxels): "
                            f"{options.patients} for training, {options.new_patients} held out as new patients")
            if on_disk is not None:
                step.summary = f"regenerating the cohort made with {on_disk}: {step.summary}"
        step.outputs["cohort"] = cohort
    with steps.step("validate") as step:
        from radiogenomics.cohort import validate_cohort

        with progress_bar("validating") as update:
            report = validate_cohort(cohort, progress=update)
        if not report.ok:
            raise InputError(f"the demo cohort failed validation: {report.errors[0].one_line()}")
        step.summary = f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
    if options.stop_after == "validate":
        return DemoResult(out_dir, steps.done, None)
    with steps.step("extract features") as step:
        from radiogenomics.features.pipeline import ExtractOptions, extract

        all_features = out_dir / "features-all.parquet"
        summary = extract(cohort, all_features, ExtractOptions(workers=options.workers, progress=True))
        features, new_features = out_dir / "features.parquet", out_dir / "new-patients.features.parquet"
        train_ids, new_ids = _split_features(cohort, all_features, features, new_features, options.patients)
        step.summary = f"{summary.one_line()}; {len(train_ids)} training rows, {len(new_ids)} new-patient rows"
        step.outputs.update({"feature table (training)": features, "feature table (new patients)": new_features})
    if options.stop_after == "extract":
        return DemoResult(out_dir, steps.done, None)
    with tracking_store(out_dir / "mlflow") as tracking_uri:
        _model_steps(steps, out_dir, cohort, features, new_features, options)
    return DemoResult(out_dir, steps.done, tracking_uri)


def _model_steps(steps: _Steps, out_dir: Path, cohort: Path, features: Path, new_features: Path,
                 options: DemoOptions) -> None:
    from radiogenomics.progress import progress_bar

    with steps.step("train and register") as step:
        from radiogenomics.training.run import train

        trained = train(cohort, features, DEMO_CONFIG, out_dir / "training", progress=True)
        registered = ", ".join(f"{name} v{v.version} ({'/'.join(v.aliases)})" for name, v in
                               trained.registered.items())
        step.summary = f"MLflow run {trained.run_id}; registered {registered or 'nothing'}"
        if not trained.registered:
            raise InputError("the demo training registered no model: " + "; ".join(trained.skipped),
                             fix="use more --patients")
        step.outputs.update({"MLflow store": out_dir / "mlflow" / "mlflow.db", "training runs": out_dir / "training"})
    with steps.step("predict the new patients") as step:
        from radiogenomics.features.patient_dvhs import cohort_dvhs
        from radiogenomics.features.schema import read_feature_table
        from radiogenomics.training.registry.prediction import (
            load_prescriber,
            predict_isolating_failures,
            write_records,
        )

        prescriber, info = load_prescriber(MODEL_URI)
        table = read_feature_table(new_features)
        records, failures = predict_isolating_failures(
            prescriber, table, info, cohort=cohort,
            oar_dvhs=cohort_dvhs(cohort, [str(p) for p in table["patient_id"]]))
        if not records:
            raise InputError(f"no new patient could be predicted: {failures[:3]}")
        prescriptions = out_dir / "prescriptions.csv"
        write_records(records, prescriptions)
        flagged = sum(bool(r["flags"]) for r in records)
        doses = ", ".join(f"{float(r['recommended_total_dose_gy']):.1f}" for r in records)
        step.summary = (f"{len(records)} record(s) from {info.uri} ({flagged} flagged, {len(failures)} failed); "
                        f"recommended {doses} Gy")
        step.outputs["prescriptions"] = prescriptions
    with steps.step("optimizer hand-off") as step:
        from radiogenomics.planning import handoff

        with progress_bar("hand-off") as update:
            update(0, 1)
            result = handoff(MODEL_URI, new_features, out_dir / "handoff", cohort=cohort)
            update(1, 1)
        maps = sum(any(f.endswith(".nii.gz") for f in p.files) for p in result.patients)
        step.summary = (f"{len(result.patients)} patient folder(s), {maps} dose-prescription map(s), "
                        f"{len(result.failures)} failure(s)")
        step.outputs["hand-off"] = out_dir / "handoff"
    if options.plan:
        with steps.step("plan on the patients' anatomy") as step:
            step.summary, plan_dir = _plan(out_dir, cohort)
            step.outputs["plans"] = plan_dir
    with steps.step("report") as step:
        from radiogenomics.report import build_report

        built = build_report(out_dir / "report.html", cohort=cohort, model_uri=MODEL_URI,
                             predictions=out_dir / "prescriptions.csv", handoff=out_dir / "handoff",
                             plans=out_dir / "plans" if options.plan else None,
                             title="radiogenomics demo report", notes=[
                                 f"Synthetic cohort of {options.patients + options.new_patients} patients: the "
                                 f"models were trained on the first {options.patients}; the prescriptions and the "
                                 f"hand-off are for the last {options.new_patients}, held out of training."])
        step.summary = (f"{len(built.sections)} sections, {built.size_bytes / 1e6:.1f} MB"
                        + (f"; not shown: {', '.join(built.missing)}" if built.missing else ""))
        step.outputs["report"] = built.path


#: The demo's plans: 7 beams, 5 mm beamlets, a 4 mm dose grid and at most 250 iterations, so that 8 patients
#: (two plans each) take minutes on a laptop (docs/planning.md for the defaults of `radiogenomics plan`).
DEMO_PLAN = {"beams": 7, "bixel_width_mm": 5.0, "dose_grid_mm": 4.0, "max_iter": 250}


def _plan(out_dir: Path, cohort: Path) -> tuple[str, Path]:
    """Plan every hand-off patient on their own anatomy; the summary line (TCP standard -> personalised)."""
    from radiogenomics.planning import PlanSettings, plan_cohort
    from radiogenomics.progress import progress_bar

    plan_dir = out_dir / "plans"
    with progress_bar("plan") as update:
        result = plan_cohort(out_dir / "handoff", cohort, plan_dir, settings=PlanSettings(**DEMO_PLAN),
                             progress=lambda done, total, note: update(done, total, note))
    import pandas as pd

    table = pd.read_csv(result.summary_csv)
    share = json.loads((plan_dir / "plans.json").read_text()).get("share_tcp_ge_0_9_hard_rails_met")
    return (f"{len(result.plans)} plan(s), {len(result.failures)} failure(s); median TCP standard "
            f"{table['tcp_uniform_reference'].median():.2f} -> personalised {table['tcp_planned'].median():.2f}; "
            f"TCP >= 0.9 with every hard rail met: {share if share is None else f'{100 * share:.0f} %'}"), plan_dir

