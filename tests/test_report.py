"""`radiogenomics report`: one self-contained HTML page, rendered in headless Chromium.

The model here is registered outside `radiogenomics train` (tests/prescriber_factory.py), so its section
shows the version's held-out tags; the full training-run section is checked on the demo's report
(tests/test_demo.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from prescriber_factory import Bundle, register_bundle, use_tracking_uri
from report_checks import browser_render, embedded_pngs, external_references, section_texts

from radiogenomics.cli.app import main
from radiogenomics.report import build_report
from radiogenomics.report.cohort import patient_gard
from radiogenomics.report.prescriptions import read_records
from radiogenomics.training.registry.prediction import write_records

MODEL = "models:/radiogenomics-prescriber@champion"
SECTIONS = ["cohort", "model", "km-gard", "prescriptions", "dose-map", "plans"]


@pytest.fixture(scope="module")
def registry(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("report-registry")
    with use_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}"):
        yield register_bundle(bundle, folder, experiment="report-test", metrics={"radiosensitivity.spearman": 0.42})


@pytest.fixture(scope="module")
def records(bundle: Bundle, registry: str) -> list[dict]:
    from radiogenomics.report.prescriptions import predict_from_features

    return predict_from_features(MODEL, bundle.features_path)


@pytest.fixture(scope="module")
def full_report(bundle: Bundle, registry: str, records: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radiogenomics.planning import handoff, plan_cohort
    from radiogenomics.planning.optimizers.base import PlanSettings

    folder = tmp_path_factory.mktemp("report")
    predictions = folder / "prescriptions.csv"
    write_records(records, predictions)
    pids = [r["patient_id"] for r in records[:2]]
    handoff(MODEL, bundle.features_path, folder / "handoff", patients=pids, cohort=bundle.cohort)
    plan_cohort(folder / "handoff", bundle.cohort, folder / "plans",
                settings=PlanSettings(beams=3, dose_grid_mm=8.0, max_iter=40))
    result = build_report(folder / "report.html", cohort=bundle.cohort, model_uri=MODEL, predictions=predictions,
                          plans=folder / "plans")
    assert result.missing == {}
    return result.path


def test_report_is_self_contained_and_complete(full_report: Path, records: list[dict], bundle: Bundle) -> None:
    html = full_report.read_text(encoding="utf-8")
    assert external_references(html) == []
    assert "<script" not in html.lower()
    sizes = embedded_pngs(html)
    # overview (2), KM, prescriptions scatter, dose slice + histogram, planned-dose slice + DVHs; no calibration
    # without a training run
    assert len(sizes) == 8 and all(w > 200 and h > 150 for w, h in sizes)
    texts = section_texts(html)
    assert list(texts) == SECTIONS
    assert not any("Not shown" in t for t in texts.values())
    n = len(pd.read_csv(bundle.cohort / "patients.csv"))
    assert f"{n} patients in" in texts["cohort"]
    assert "registered outside `radiogenomics train`" in texts["model"] and "0.42" in texts["model"]
    for record in records:
        assert record["patient_id"] in texts["prescriptions"]
    flagged = sum(bool(r["flags"]) for r in records)
    assert html.count('class="flagged"') == flagged
    assert "computed here with the hand-off's TCP-optimal painting" in texts["dose-map"]
    assert "planned on their own CT and structures" in texts["plans"] and "TCP standard" in texts["plans"]
    assert "Synthetic cohort, photon IMRT" in texts["plans"]  # bundle.cohort's cohort.yaml names the generator


def test_report_in_headless_chromium(full_report: Path, records: list[dict], tmp_path: Path) -> None:
    screenshot = tmp_path / "report.png"
    seen = browser_render(full_report, screenshot)
    assert seen["resources"] == []  # the page fetched nothing
    assert seen["images"] and all(ok and w > 200 and h > 150 for ok, w, h in seen["images"])  # type: ignore[union-attr]
    assert [h.split(". ", 1)[1] for h in seen["headings"]] == [  # type: ignore[union-attr]
        "Cohort overview", "Model performance", "Local control by GARD group", "Per-patient prescriptions",
        "Dose-prescription map", "Plans on the patients' anatomy"]
    plans = pd.read_csv(full_report.parent / "plans" / "summary.csv")  # a plan breaking a hard rail is flagged too
    assert seen["flagged_rows"] == sum(bool(r["flags"]) for r in records) + int((~plans["hard_rails_met"]).sum())
    assert screenshot.stat().st_size > 50_000 and int(seen["height"]) > 3000  # type: ignore[call-overload]


def test_gard_groups_follow_the_cohort(bundle: Bundle, full_report: Path) -> None:
    """Tertiles hold every patient with RSI, regimen and follow-up; the events add up to patients.csv's."""
    from radiogenomics.cohort import load_cohort

    table = patient_gard(load_cohort(bundle.cohort))
    patients = pd.read_csv(bundle.cohort / "patients.csv").set_index("patient_id")
    assert len(table) >= 6
    # GARD rises with dose and falls with RSI: the lowest-RSI patient at the same regimen has the highest GARD
    same = table.assign(dose=patients.loc[table["patient_id"], "total_dose_gy"].to_numpy(),
                        n=patients.loc[table["patient_id"], "n_fractions"].to_numpy())
    for _, group in same.groupby(["dose", "n"]):
        if len(group) > 1:
            assert group.sort_values("rsi")["gard"].is_monotonic_decreasing
    rows = re.findall(r"<tr><td>(low|middle|high) GARD</td><td>[^<]+</td><td>(\d+)</td><td>(\d+)</td>",
                      full_report.read_text(encoding="utf-8"))
    assert sum(int(r[1]) for r in rows) == len(table)
    assert sum(int(r[2]) for r in rows) == int(patients.loc[table["patient_id"], "lc_event"].sum())


def test_records_read_back_from_every_format(records: list[dict], tmp_path: Path) -> None:
    for suffix in (".csv", ".parquet", ".json"):
        path = tmp_path / f"rx{suffix}"
        write_records(records, path)
        back = read_records(path)
        assert [r["patient_id"] for r in back] == [r["patient_id"] for r in records]
        assert [list(r["flags"]) for r in back] == [r["flags"] for r in records]
        assert [r["toxicity"] for r in back] == [pytest.approx(r["toxicity"]) for r in records]


def test_plans_section_marks_unknown_rails_and_names_only_a_synthetic_cohort(tmp_path: Path) -> None:
    """A NaN hard_rails_met / converged (not recorded) is shown as unknown, not "yes", and its row is not
    flagged; "Synthetic cohort" only when the cohort's cohort.yaml names radiogenomics' generator."""
    from types import SimpleNamespace

    from radiogenomics.report.plans import plans_section
    from radiogenomics.report.sections import Paragraph, Table, fmt

    row = {"regimen": "70 Gy / 35 fx", "painting": "uniform", "tcp_uniform_reference": 0.5, "tcp_planned": 0.6,
           "tcp_planned_low": 0.5, "tcp_planned_high": 0.7}
    pd.DataFrame([{"patient_id": "P1", **row, "hard_rails_met": True, "converged": True, "seconds": 12.3},
                  {"patient_id": "P2", **row, "hard_rails_met": False, "converged": False, "seconds": 4.0},
                  {"patient_id": "P3", **row, "hard_rails_met": None, "converged": None, "seconds": None}],
                 ).to_csv(tmp_path / "summary.csv", index=False)
    for pid in ("P1", "P2", "P3"):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "plan_evaluation.json").write_text(json.dumps({"painting": "uniform"}))
    clinical = SimpleNamespace(meta={"format_version": 1})
    synthetic = SimpleNamespace(meta={"generator": {"module": "radiogenomics.synthetic"}})
    for cohort, named in ((None, False), (clinical, False), (synthetic, True)):
        section = plans_section(tmp_path, cohort)  # type: ignore[arg-type]
        text = next(b.text for b in section.blocks if isinstance(b, Paragraph))
        assert ("Synthetic cohort" in text) is named and "IMRT" in text, text
    table = next(b for b in section.blocks if isinstance(b, Table))
    rails, converged = table.columns.index("hard rails met"), table.columns.index("converged")
    assert [(r[rails], r[converged], r[-1]) for r in table.rows] == [
        ("yes", "yes", "12"), ("no", "no", "4"), (fmt(None), fmt(None), fmt(None))]
    assert list(table.highlight) == [False, True, False]


def test_sections_without_inputs_say_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "empty.html"
    assert main(["report", "--out", str(out)]) == 0
    texts = section_texts(out.read_text(encoding="utf-8"))
    assert list(texts) == SECTIONS and all(t.count("Not shown:") == 1 for t in texts.values())
    assert "pass --cohort COHORT" in texts["cohort"] and "--model MODEL_URI" in texts["model"]
    assert "not shown: Model performance" in capsys.readouterr().err


def test_handoff_map_is_preferred(bundle: Bundle, registry: str, records: list[dict], tmp_path: Path) -> None:
    """A hand-off folder's map is shown (not recomputed), with the cohort's target contour."""
    from radiogenomics.planning import handoff

    pid = records[0]["patient_id"]
    handoff(MODEL, bundle.features_path, tmp_path / "handoff", patients=[pid], cohort=bundle.cohort)
    result = build_report(tmp_path / "r.html", cohort=bundle.cohort, handoff=tmp_path / "handoff")
    text = section_texts(result.path.read_text(encoding="utf-8"))["dose-map"]
    assert f"Patient {pid}:" in text and "written by radiogenomics handoff" in text
    summary = json.loads((tmp_path / "handoff" / pid / "prescription.json").read_text())
    mean = re.search(r"mean dose in the target \(Gy\) ([0-9.]+)", text)
    assert mean is not None and float(mean.group(1)) == pytest.approx(summary["recommended_total_dose_gy"], rel=1e-2)


@pytest.mark.parametrize(("args", "message"), [
    (["--predictions", "no_such.csv"], "does not exist"),
    (["--model", "not-a-uri"], "not a registry URI"),
    (["--handoff", "no_such_folder"], "hand-off folder"),
    (["--cohort", "no_such_cohort"], "no_such_cohort"),
    (["--features", "features.parquet"], "no --model was given"),
])
def test_bad_input_exits_2(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--out", "r.html", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()
