"""`radiogenomics demo`: every step runs at a tiny size and leaves every output it promises.

One demo (24 training + 3 new patients, 16^3 voxels) runs once as a subprocess in a scratch folder; the tests
read what it left. Seed 1 and the 16^3 grid are those of docs/cli.md's synth example, so CI's extraction
cache may already hold the patients.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from report_checks import embedded_pngs, external_references, section_texts

from radiogenomics.cli.app import main
from radiogenomics.demo import generator_options
from radiogenomics.errors import InputError

N_TRAIN, N_NEW = 24, 3
STEPS = ("synthesise the cohort", "validate", "extract features", "train and register", "predict the new patients",
         "optimizer hand-off", "plan on the patients' anatomy", "report")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "radiogenomics", "demo", "--out", "demo", "--patients", str(N_TRAIN),
                           "--new-patients", str(N_NEW), "--grid-size", "16", "--seed", "1", "--workers", "2"],
                          cwd=work, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    (work / "demo.stderr").write_text(proc.stderr)
    return work / "demo", proc.stdout


def test_summary_lists_every_step_and_output(demo: tuple[Path, str]) -> None:
    out_dir, stdout = demo
    summary = stdout.split("demo done", 1)[1]
    for i, step in enumerate(STEPS, start=1):
        assert re.search(rf"^  {i}\. {re.escape(step)} +\d+\.\d s  \S", summary, flags=re.M), step
    outputs = re.findall(r"^  (.+?) {2,}(/\S+)$", summary.split("outputs:", 1)[1], flags=re.M)
    assert len(outputs) == 9 and all(Path(p).exists() for _, p in outputs), outputs
    db = (out_dir / "mlflow" / "mlflow.db").resolve()
    assert f"mlflow ui --backend-store-uri sqlite:///{db}" in summary
    # the store's artifacts stay inside the demo folder (not ./mlruns of the working folder)
    assert not (out_dir.parent / "mlruns").exists() and any((out_dir / "mlflow" / "mlartifacts").iterdir())


def test_stderr_is_quiet_and_the_log_is_beside_the_outputs(demo: tuple[Path, str]) -> None:
    """Issue 16.7: no third-party warning on stderr (MLflow's type-hint hints in colour, scikit-learn's unknown
    categories, pyRadPlan's numpy warnings, per-fold calibration notes); the details go to demo/demo.log."""
    from test_quiet_cli import OURS, third_party_warnings

    out_dir, stdout = demo
    stderr = (out_dir.parent / "demo.stderr").read_text()
    assert not third_party_warnings(stderr), third_party_warnings(stderr)[:10]
    assert not [line for line in stderr.splitlines() if line.strip() and not OURS.match(line)], stderr[-3000:]
    assert stdout.count(f"log: {out_dir.resolve() / 'demo.log'}") == 1
    log = (out_dir / "demo.log").read_text()
    assert " DEBUG radiogenomics." in log and "pyRadPlan" in log


def test_new_patients_are_held_out_and_predicted_by_the_champion(demo: tuple[Path, str]) -> None:
    import mlflow

    out_dir, _ = demo
    train_ids = set(pd.read_parquet(out_dir / "features.parquet", columns=["patient_id"])["patient_id"])
    new_ids = list(pd.read_parquet(out_dir / "new-patients.features.parquet", columns=["patient_id"])["patient_id"])
    assert len(train_ids) == N_TRAIN and len(new_ids) == N_NEW and not train_ids & set(new_ids)
    records = pd.read_csv(out_dir / "prescriptions.csv")
    assert records["patient_id"].tolist() == new_ids
    client = mlflow.MlflowClient(f"sqlite:///{out_dir / 'mlflow' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("radiogenomics-prescriber", "champion")
    assert set(records["model_version"].astype(str)) == {str(champion.version)}
    run = client.get_run(champion.run_id)
    assert run.data.tags["winner.radiosensitivity"] == "ridge"  # the demo config's candidate, trained by `train`
    assert int(run.data.params["cv.outer_folds"]) == 3


def test_handoff_and_plan(demo: tuple[Path, str]) -> None:
    out_dir, _ = demo
    records = pd.read_csv(out_dir / "prescriptions.csv")
    for pid in records["patient_id"]:
        folder = out_dir / "handoff" / pid
        for name in ("prescription.json", "objectives.json", "dose_prescription.nii.gz", "dose_prescription.dcm"):
            assert (folder / name).is_file(), (pid, name)
        assert json.loads((folder / "objectives.json").read_text())["format"] == "radiogenomics-objectives/1"
    # every new patient planned on their own CT and structures, evaluated against the standard uniform plan
    summary = pd.read_csv(out_dir / "plans" / "summary.csv")
    failures = pd.read_csv(out_dir / "plans" / "failures.csv")
    assert sorted(summary["patient_id"].astype(str).tolist() + failures["patient_id"].astype(str).tolist()) == \
        sorted(records["patient_id"].astype(str))
    # seed 1 at 16^3 voxels plans all three: a failure here is a regression, not an accepted outcome
    assert failures.empty, failures.to_dict("records")
    assert sorted(summary["patient_id"].astype(str)) == sorted(records["patient_id"].astype(str))
    for pid in summary["patient_id"].astype(str):
        evaluation = json.loads((out_dir / "plans" / pid / "plan_evaluation.json").read_text())
        assert evaluation["format"] == "radiogenomics-plan-evaluation/1"
        record = records.set_index("patient_id").loc[pid]
        assert evaluation["regimen"]["n_fractions"] == record["recommended_n_fractions"]
        gtv = next(s for s in evaluation["structures"] if s["role"] == "target")
        assert gtv["mean_gy"] == pytest.approx(record["recommended_total_dose_gy"], rel=0.15)  # 16^3 voxels: coarse
        assert (out_dir / "plans" / pid / "plan_dose.nii.gz").is_file()


def test_report_shows_the_training_run(demo: tuple[Path, str]) -> None:
    import mlflow

    out_dir, _ = demo
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    assert external_references(html) == [] and "<script" not in html.lower()
    assert len(embedded_pngs(html)) >= 9  # 2 overview, RSI + coverage, a calibration per endpoint, KM, 3 more
    texts = section_texts(html)
    assert not any("Not shown" in t for t in texts.values())
    model = texts["model"]
    assert "pooled held-out" in model and "mean ± SD" in model
    assert 'alt="bar chart of conformal coverage per outer fold"' in html and "calibration curve of the" in html
    client = mlflow.MlflowClient(f"sqlite:///{out_dir / 'mlflow' / 'mlflow.db'}")
    run = client.get_run(client.get_model_version_by_alias("radiogenomics-prescriber", "champion").run_id)
    pooled = run.data.metrics["radiosensitivity/ridge/heldout.spearman"]
    assert f"radiosensitivity ridge spearman {pooled:.3g} yes" in model
    assert "written by radiogenomics handoff" in texts["dose-map"]
    assert f"trained on the first {N_TRAIN}" in html and f"for the last {N_NEW}, held out of training" in html


def test_generator_options_guard(demo: tuple[Path, str], tmp_path: Path) -> None:
    out_dir, _ = demo
    assert generator_options(out_dir / "cohort") == {"seed": 1, "n_patients": N_TRAIN + N_NEW, "grid_size": 16}
    assert generator_options(tmp_path / "empty") is None
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a demo cohort")
    with pytest.raises(InputError, match="did not generate"):
        generator_options(tmp_path / "mine")


@pytest.mark.parametrize("args", [["--patients", "5"], ["--new-patients", "0"]])
def test_bad_sizes_exit_2_before_any_work(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), *args]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "d").exists()
