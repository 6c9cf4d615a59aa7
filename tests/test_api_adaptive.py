"""POST /v1/adaptations/images (contract sections 6 and 8): one patient's planning and mid-treatment images
uploaded -> the baseline record as the images endpoint predicts it -> the rest of the course re-prescribed from
the mid-treatment PET, the same adapted record as `radiogenomics adapt` gives on a cohort holding the same files;
401 without a token, 422 naming the field for a planning, unknown or missing timepoint, audit rows as for the
images endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from records_compare import assert_records_close
from serving_factory import MODEL, new_token

from radiogenomics.cli.app import main
from radiogenomics.serving.api import ADAPT_PATH, create_app

K = 10
TIMEPOINT = f"fraction_{K}"
#: The §8 fields an adapted record adds to the baseline record.
ADAPTED_FIELDS = ("timepoint", "delivered_n_fractions", "delivered_dose_gy", "remaining_n_fractions",
                  "remaining_dose_per_fraction_gy", "adapted_total_dose_gy", "baseline_total_dose_gy", "response",
                  "tcp_baseline", "tcp_adapted", "adaptation")


# ------------------------------------------------------------------------------------------- helpers
def mid_treatment_cohort(folder: Path) -> Path:
    """A 2-patient synthetic cohort (24^3 grid) with an FDG and FMISO PET after K fractions (images.csv
    ``timepoint`` fraction_10)."""
    from radiogenomics.synthetic import generate_cohort

    return generate_cohort(folder, n_patients=2, seed=19, grid_size=24, overwrite=True, mid_treatment_fraction=K)


def upload_parts(cohort: Path, patient_id: str, folder: Path) -> dict[str, Any]:
    """The patient's files (name -> path), manifest (one entry per image of images.csv, with its timepoint; the
    patient's rows of dvh.csv written to ``folder``), clinical row and expression profile, as a client sends them
    to the API."""
    rows = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    rows = rows[rows["patient_id"] == patient_id]
    files: dict[str, Path] = {}
    entries: list[dict[str, Any]] = []
    for (modality, image, mask, timepoint), group in rows.groupby(["modality", "image", "mask", "timepoint"],
                                                                  sort=False):
        files[Path(image).name] = cohort / image
        entry: dict[str, Any] = {"modality": modality, "image": Path(image).name}
        if mask:
            files[Path(mask).name] = cohort / mask
            entry.update(mask=Path(mask).name, rois={r: int(v) for r, v in zip(group["roi"], group["label"],
                                                                                strict=True)})
        if timepoint != "planning":
            entry["timepoint"] = timepoint
        entries.append(entry)
    dvh = pd.read_csv(cohort / "dvh.csv", dtype=str, keep_default_na=False)
    folder.mkdir(parents=True, exist_ok=True)
    files["dvh.csv"] = folder / "dvh.csv"  # structures without a mask (pharyngeal constrictors): dose features
    dvh[dvh["patient_id"] == patient_id].to_csv(files["dvh.csv"], index=False)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    expression = pd.read_csv(cohort / "expression.csv", dtype=str, keep_default_na=False)
    return {"patient_id": patient_id, "files": files, "manifest": {"images": entries, "dvh": "dvh.csv"},
            "clinical": patients[patients["patient_id"] == patient_id].iloc[0].to_dict(),
            "expression": {g: float(v) for g, v in expression[expression["patient_id"] == patient_id].iloc[0].items()
                           if g != "patient_id"}}


def form(parts: dict[str, Any], **fields: Any) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes]]]]:
    """(text fields, file parts) of a multipart request; ``fields`` override or add text fields (None drops one)."""
    data = {"patient_id": parts["patient_id"], "manifest": json.dumps(parts["manifest"]),
            "clinical": json.dumps(parts["clinical"]), "expression": json.dumps(parts["expression"]),
            "timepoint": TIMEPOINT}
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value if isinstance(value, str) else json.dumps(value)
    files = [("files", (name, path.read_bytes())) for name, path in parts["files"].items()]
    return data, files


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mid_treatment_cohort(tmp_path_factory.mktemp("api-adaptive") / "cohort")


@pytest.fixture(scope="module")
def parts(cohort: Path) -> dict[str, Any]:
    return upload_parts(cohort, "SYN0001", cohort.parent / "upload")


@pytest.fixture(scope="module")
def served(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("api-adaptive-serve")
    tokens, token = new_token(folder)
    app = create_app(MODEL, tokens_file=tokens, audit_db=folder / "audit.sqlite", workdir=folder / "work")
    with TestClient(app) as client:
        yield {"app": app, "client": client, "auth": {"Authorization": f"Bearer {token}"}, "token": token,
               "work": folder / "work"}


def post(served: dict[str, Any], parts: dict[str, Any], *, auth: bool = True, **fields: Any) -> httpx.Response:
    data, files = form(parts, **fields)
    return served["client"].post(ADAPT_PATH, data=data, files=files, headers=served["auth"] if auth else {})


@pytest.fixture(scope="module")
def adapted(served: dict[str, Any], parts: dict[str, Any]) -> dict[str, Any]:
    """The API's answer to the patient's planning + fraction_10 upload (one extraction for the module)."""
    response = post(served, parts)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def cli_adapted(cohort: Path, registry: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`radiogenomics adapt` on the cohort: the adapted records by patient."""
    out = tmp_path_factory.mktemp("api-adaptive-cli") / "adapted.json"
    assert main(["adapt", str(cohort), "--model", MODEL, "--timepoint", TIMEPOINT, "--out", str(out),
                 "--workers", "1"]) == 0
    return {r["patient_id"]: r for r in json.loads(out.read_text())["records"]}


# --------------------------------------------------------------------------------------------- tests
def test_adapted_record_is_an_exact_course(adapted: dict[str, Any], parts: dict[str, Any],
                                           served: dict[str, Any]) -> None:
    (record,) = adapted["records"]
    assert record["patient_id"] == parts["patient_id"] and record["timepoint"] == TIMEPOINT
    assert set(ADAPTED_FIELDS) <= set(record)
    assert record["delivered_n_fractions"] == K
    assert abs(record["delivered_dose_gy"] + record["remaining_n_fractions"] * record["remaining_dose_per_fraction_gy"]
               - record["adapted_total_dose_gy"]) <= 1e-9
    assert record["baseline_total_dose_gy"] == record["recommended_total_dose_gy"]
    # the mid-treatment PET was read: the response has both timepoints and the adaptation no fallback
    assert "adaptation_fallback" not in record["flags"], record["adaptation"]["notes"]
    assert record["response"]["modalities"] == ["PET_FDG", "PET_FMISO"]
    for when in ("baseline", "mid_treatment"):
        assert 0.0 <= record["response"][when]["hypoxic_fraction"] <= 1.0
        assert record["response"][when]["suv_max"] > 0
    assert 0.0 <= record["tcp_baseline"] <= 1.0 and 0.0 <= record["tcp_adapted"] <= 1.0
    assert list(served["work"].iterdir()) == []  # the request folder is gone


def test_api_equals_the_cli(adapted: dict[str, Any], cli_adapted: dict[str, Any], parts: dict[str, Any]) -> None:
    """The same patient's files through the API and through `radiogenomics adapt` on the cohort: the same adapted
    record (input hash, flags and course exactly; floats to rounding: batches of one and two patients)."""
    (api,) = adapted["records"]
    cli = cli_adapted[parts["patient_id"]]
    assert api["remaining_n_fractions"] == cli["remaining_n_fractions"]
    assert api["delivered_n_fractions"] == cli["delivered_n_fractions"]
    assert api["adapted_total_dose_gy"] == pytest.approx(cli["adapted_total_dose_gy"], rel=1e-12)
    assert api["input_sha256"] == cli["input_sha256"] and api["flags"] == cli["flags"]
    assert_records_close(api, cli)


def test_clinical_delivered_course(served: dict[str, Any], parts: dict[str, Any]) -> None:
    """clinical's delivered_* columns (patients.csv, contract section 8) are what was delivered."""
    clinical = {**parts["clinical"], "delivered_n_fractions": K, "delivered_dose_gy": 21.5}
    response = post(served, {**parts, "clinical": clinical})
    assert response.status_code == 200, response.text
    (record,) = response.json()["records"]
    assert (record["delivered_n_fractions"], record["delivered_dose_gy"]) == (K, 21.5)
    assert record["adaptation"]["delivered_source"] == "patients.csv"
    assert abs(21.5 + record["remaining_n_fractions"] * record["remaining_dose_per_fraction_gy"]
               - record["adapted_total_dose_gy"]) <= 1e-9


def test_needs_a_token(served: dict[str, Any], parts: dict[str, Any]) -> None:
    wrong = served["token"][:-4] + ("aaaa" if not served["token"].endswith("aaaa") else "bbbb")
    for headers in ({}, {"Authorization": f"Bearer {wrong}"}):
        data, files = form(parts)
        response = served["client"].post(ADAPT_PATH, data=data, files=files, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"


def _detail(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    return response.json()["detail"]


@pytest.mark.parametrize("timepoint,why", [("planning", "is the baseline"), ("Planning", "is the baseline"),
                                           ("week_2", "is not a timepoint"), ("fraction_0", "is not a timepoint"),
                                           ("fraction_-3", "is not a timepoint")])
def test_timepoint_that_is_not_mid_treatment_is_422(served: dict[str, Any], parts: dict[str, Any], timepoint: str,
                                                    why: str) -> None:
    (item,) = _detail(post(served, parts, timepoint=timepoint))
    assert (item["loc"], item["type"]) == (["body", "timepoint"], "timepoint"), item
    assert f"timepoint {timepoint!r} {why}" in item["msg"] and "fraction_K" in item["msg"], item


@pytest.mark.parametrize("timepoint", [None, ""])
def test_missing_timepoint_is_422(served: dict[str, Any], parts: dict[str, Any], timepoint: str | None) -> None:
    detail = _detail(post(served, parts, timepoint=timepoint))
    assert [i["loc"] for i in detail] == [["body", "timepoint"]], detail


def test_no_image_at_the_timepoint_is_422(served: dict[str, Any], parts: dict[str, Any]) -> None:
    (item,) = _detail(post(served, parts, timepoint="fraction_5"))
    assert item["loc"] == ["body", "manifest"], item
    assert "no image in manifest.images has timepoint fraction_5" in item["msg"], item
    assert "(manifest.images has fraction_10)" in item["msg"] and '"timepoint": "fraction_5"' in item["msg"]
    # only the planning images sent: the same, saying so
    planning = {**parts, "manifest": {**parts["manifest"],
                                      "images": [e for e in parts["manifest"]["images"] if "timepoint" not in e]},
                "files": {n: p for n, p in parts["files"].items() if "_fx" not in n}}
    (item,) = _detail(post(served, planning))
    assert f"no image in manifest.images has timepoint {TIMEPOINT}" in item["msg"]
    assert "every entry is a planning image" in item["msg"]
    # a CT at the timepoint is not what the adaptation reads
    ct = {**planning, "manifest": {**parts["manifest"], "images": [
        *planning["manifest"]["images"], {**planning["manifest"]["images"][0], "timepoint": TIMEPOINT}]}}
    (item,) = _detail(post(served, ct))
    assert f"the images at timepoint {TIMEPOINT} are CT" in item["msg"] and "PET_FDG or PET_FMISO" in item["msg"]
    # no planning image at all
    mid_only = {**parts, "manifest": {**parts["manifest"],
                                      "images": [e for e in parts["manifest"]["images"] if "timepoint" in e]}}
    (item,) = _detail(post(served, mid_only))
    assert "manifest.images has no planning image" in item["msg"]
    assert list(served["work"].iterdir()) == []


def test_bad_manifest_timepoint_and_course_are_422(served: dict[str, Any], parts: dict[str, Any]) -> None:
    images = [dict(e) for e in parts["manifest"]["images"]]
    for bad in ("after week 2", "fraction_" + "9" * 5000):  # the second: beyond int()'s digit limit
        images[-1]["timepoint"] = bad
        (item,) = _detail(post(served, {**parts, "manifest": {**parts["manifest"], "images": images}}))
        assert item["loc"] == ["body", "manifest"], item
        assert f"manifest.images[{len(images) - 1}].timepoint" in item["msg"] and "fraction_K" in item["msg"]
    # imaging after 10 fractions of an 8-fraction course: the cohort validator's error, before any extraction
    short = {**parts, "clinical": {**parts["clinical"], "n_fractions": 8, "total_dose_gy": 20}}
    (item,) = _detail(post(served, short))
    assert "timepoint_after_course" in item["msg"] and "must be below 8 (or correct n_fractions)" in item["msg"]


def test_audit_rows(served: dict[str, Any], adapted: dict[str, Any], parts: dict[str, Any]) -> None:
    audit = served["app"].state.audit
    before = len(audit.rows())
    assert post(served, parts, timepoint="planning").status_code == 422
    rows = [r for r in audit.rows() if r["endpoint"] == f"POST {ADAPT_PATH}"]
    (record,) = adapted["records"]
    ok = {(r["patient_id"], r["input_sha256"], r["status_code"], r["token_name"]) for r in rows if r["outcome"] == "ok"}
    # the module's 200s (delivered_* are no features: the same input hash)
    assert ok == {(parts["patient_id"], record["input_sha256"], 200, "planner")}
    (rejected,) = [r for r in audit.rows()[before:] if r["endpoint"] == f"POST {ADAPT_PATH}"]
    assert (rejected["patient_id"], rejected["outcome"], rejected["input_sha256"]) == \
        (parts["patient_id"], "rejected:422", None)
    assert "head_neck" not in json.dumps(rows)  # no clinical values in the log
