"""POST /v1/prescriptions/images: uploads -> one-patient cohort -> record, and every upload safety check."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import SimpleITK as sitk
from prescriber_factory import Bundle, session_base, use_tracking_uri
from records_compare import assert_records_close
from serving_factory import MODEL, new_token, shared_registry, tracking_uri
from starlette.datastructures import UploadFile

from radiogenomics.errors import InputError
from radiogenomics.models.prescriber import RECORD_FIELDS
from radiogenomics.serving.state import LoadedModel, load_model
from radiogenomics.serving.uploads import UploadLimits, UploadTooLarge, prescribe_images

NO_REGIMEN: dict[str, float | None] = {"n_fractions": None, "dose_per_fraction_gy": None, "target_gard": None}


@pytest.fixture(scope="module")
def loaded(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedModel]:
    """The champion of the session's shared registry, loaded as the server loads it (the store stays set)."""
    folder, _ = shared_registry(bundle, session_base(tmp_path_factory))
    with use_tracking_uri(tracking_uri(folder)):
        yield load_model(MODEL, alias="champion")


@pytest.fixture(scope="module")
def patient(bundle: Bundle) -> dict[str, Any]:
    """The first patient's files (name -> bytes), manifest, clinical row and expression as the API gets them."""
    pid = str(pd.read_csv(bundle.cohort / "patients.csv", dtype=str)["patient_id"].iloc[0])
    rows = pd.read_csv(bundle.cohort / "images.csv", dtype=str, keep_default_na=False)
    rows = rows[rows["patient_id"] == pid]
    files: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    for (modality, image, mask), group in rows.groupby(["modality", "image", "mask"], sort=False):
        files[Path(image).name] = (bundle.cohort / image).read_bytes()
        entry: dict[str, Any] = {"modality": modality, "image": Path(image).name}
        if mask:
            files[Path(mask).name] = (bundle.cohort / mask).read_bytes()
            entry.update(mask=Path(mask).name, rois={r: int(lbl) for r, lbl in zip(group["roi"], group["label"],
                                                                                     strict=True)})
        entries.append(entry)
    dvh = pd.read_csv(bundle.cohort / "dvh.csv", dtype=str, keep_default_na=False)
    files["dvh.csv"] = dvh[dvh["patient_id"] == pid].to_csv(index=False).encode()
    clinical = pd.read_csv(bundle.cohort / "patients.csv", dtype=str, keep_default_na=False)
    expression = pd.read_csv(bundle.cohort / "expression.csv", dtype=str, keep_default_na=False)
    return {"patient_id": pid, "files": files, "manifest": {"images": entries, "dvh": "dvh.csv"},
            "clinical": clinical[clinical["patient_id"] == pid].iloc[0].to_dict(),
            "expression": {g: float(v) for g, v in expression[expression["patient_id"] == pid].iloc[0].items()
                           if g != "patient_id"}}


def upload(loaded: LoadedModel, workdir: Path, files: dict[str, bytes] | list[tuple[str, bytes]], manifest: Any, *,
           patient_id: str = "P1", expression: Any = None, clinical: Any = None, limits: UploadLimits | None = None,
           cache_dir: Path | None = None, regimen: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Call prescribe_images with real starlette UploadFile objects, as the route does."""
    parts = list(files.items()) if isinstance(files, dict) else files
    uploads = [UploadFile(io.BytesIO(data), filename=name, size=len(data)) for name, data in parts]

    def text(value: Any) -> str | None:
        return value if value is None or isinstance(value, str) else json.dumps(value)

    return asyncio.run(prescribe_images(
        loaded, patient_id=patient_id, manifest=text(manifest) or "", files=uploads, expression=text(expression),
        clinical=text(clinical), regimen=regimen or NO_REGIMEN, workdir=workdir, cache_dir=cache_dir,
        limits=limits or UploadLimits()))


def _without_time(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "created_at"}


@pytest.mark.blas_sensitive
def test_nifti_upload_equals_predict(bundle: Bundle, loaded: LoadedModel, patient: dict[str, Any], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from radiogenomics.cli.app import main

    cache = bundle.features_path.parent / "cache"
    monkeypatch.setenv("RADIOGENOMICS_CACHE_DIR", str(cache))
    out = tmp_path / "rx.json"
    assert main(["predict", str(bundle.cohort), "--model", MODEL, "--out", str(out), "--workers", "1"]) == 0
    expected = {r["patient_id"]: r for r in json.loads(out.read_text())["records"]}[patient["patient_id"]]
    workdir = tmp_path / "work"
    records = upload(loaded, workdir, patient["files"], patient["manifest"], patient_id=patient["patient_id"],
                     expression=patient["expression"], clinical=patient["clinical"], cache_dir=cache)
    assert len(records) == 1 and list(records[0]) == list(RECORD_FIELDS)
    got = json.loads(json.dumps(records[0]))  # as the API serialises it
    # same features, regimen and model -> the same input hash, identifiers and flags, and the same figures to
    # rounding: the models' batch of 24 rows (predict) and of one row (here) may differ in the last bits
    assert_records_close(got, expected)
    assert "missing_genomics" not in got["flags"]
    assert list(workdir.iterdir()) == []  # the request folder is gone


def test_expression_absent_flags_missing_genomics(bundle: Bundle, loaded: LoadedModel, patient: dict[str, Any],
                                                  tmp_path: Path) -> None:
    regimen = {"n_fractions": 30.0, "dose_per_fraction_gy": 2.2, "target_gard": 40.0}
    clinical = {k: v for k, v in patient["clinical"].items() if k not in ("site", "patient_id")}  # site: the model's
    files = dict(patient["files"])  # a DVH table without patient_id: the request's patient
    files["dvh.csv"] = pd.read_csv(io.BytesIO(files["dvh.csv"])).drop(columns="patient_id").to_csv(index=False).encode()
    records = upload(loaded, tmp_path, files, patient["manifest"], patient_id="NEW-1",
                     clinical=clinical, cache_dir=bundle.features_path.parent / "cache", regimen=regimen)
    (record,) = records
    assert record["patient_id"] == "NEW-1" and "missing_genomics" in record["flags"]
    assert (record["n_fractions"], record["dose_per_fraction_gy"], record["target_gard"]) == (30.0, 2.2, 40.0)
    assert list(tmp_path.iterdir()) == []


def _zip(members: dict[str, bytes], infos: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for info, data in infos:
            zf.writestr(info, data)
    return buffer.getvalue()


def test_zipped_dicom_series_and_rtstruct(loaded: LoadedModel, patient: dict[str, Any], tmp_path: Path) -> None:
    """A zipped CT series + RTSTRUCT gives the same features, hence the same record, as the NIfTI CT + label map."""
    from radiogenomics.cohort.dicom import write_ct_series
    from radiogenomics.cohort.rtstruct import write_rtstruct

    src = tmp_path / "src"
    src.mkdir()
    for name in ("ct.nii.gz", "labels.nii.gz"):
        (src / name).write_bytes(patient["files"][name])
    ct = sitk.ReadImage(str(src / "ct.nii.gz"))
    labels = sitk.ReadImage(str(src / "labels.nii.gz"))
    series = src / "export" / "CT"
    write_ct_series(ct, series, patient_id="P1")
    masks = {roi: sitk.Cast(labels == label, sitk.sitkUInt8) for roi, label in (("GTV", 1), ("parotid_l", 2))}
    write_rtstruct(masks, series, src / "export" / "RS.dcm")
    members = {f"export/CT/{p.name}": p.read_bytes() for p in sorted(series.iterdir())}
    members["export/RS.dcm"] = (src / "export" / "RS.dcm").read_bytes()
    members["__MACOSX/export/._RS.dcm"] = b"resource fork"  # clutter is skipped
    dicom = upload(loaded, tmp_path / "w1", {"ct_series.zip": _zip(members)},
                   {"images": [{"modality": "CT", "image": "ct_series.zip", "mask": "ct_series.zip",
                                "rois": ["GTV", "parotid_l"]}]}, expression=patient["expression"])
    nifti = upload(loaded, tmp_path / "w2", {n: patient["files"][n] for n in ("ct.nii.gz", "labels.nii.gz")},
                   {"images": [{"modality": "CT", "image": "ct.nii.gz", "mask": "labels.nii.gz",
                                "rois": {"GTV": 1, "parotid_l": 2}}]}, expression=patient["expression"])
    assert _without_time(dicom[0]) == _without_time(nifti[0])
    assert "missing_imaging" in dicom[0]["flags"]  # no PET uploaded, the model has PET features
    assert list((tmp_path / "w1").iterdir()) == [] and list((tmp_path / "w2").iterdir()) == []


def _lying_zip() -> bytes:
    """A zip whose headers declare 1000 bytes for an entry that inflates to 3 MiB."""
    data = bytearray(_zip({"zeros.bin": b"\0" * (3 << 20)}))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22:local + 26] = struct.pack("<I", 1000)
    data[central + 24:central + 28] = struct.pack("<I", 1000)
    return bytes(data)


def _symlink_info() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("export/passwd")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


ZIP_MANIFEST = {"images": [{"modality": "CT", "image": "s.zip", "mask": "s.zip", "rois": ["GTV"]}]}


@pytest.mark.parametrize(("archive", "limits", "error", "match"), [
    (_zip({"../evil.dcm": b"x"}), None, InputError, r"'\.\./evil\.dcm' points outside the archive"),
    (_zip({"/tmp/evil.dcm": b"x"}), None, InputError, "has an absolute path"),
    (_zip({"C:/evil.dcm": b"x"}), None, InputError, "has an absolute path"),
    (_zip({}, [(_symlink_info(), b"/etc/passwd")]), None, InputError, "is a symbolic link"),
    (_zip({"zeros.bin": b"\0" * (3 << 20)}), UploadLimits(max_unzipped_bytes=1 << 20), UploadTooLarge,
     "unpacking the zip archives needs 3145728 bytes"),
    (_lying_zip(), None, InputError, r"corrupt or uses an unsupported feature \(Bad CRC-32 for file 'zeros.bin'"),
    (_zip({f"f{i}.dcm": b"x" for i in range(5)}), UploadLimits(max_files=5), UploadTooLarge, "too many files"),
    (b"PK not a zip", None, InputError, "not a zip archive"),
    (_zip({"readme.txt": b"no dicom"}), None, InputError, "holds DICOM image files in 0 folders"),
])
def test_unsafe_archives_rejected(loaded: LoadedModel, tmp_path: Path, archive: bytes, limits: UploadLimits | None,
                                  error: type[Exception], match: str) -> None:
    workdir = tmp_path / "work"
    with pytest.raises(error, match=match) as info:
        upload(loaded, workdir, {"s.zip": archive}, ZIP_MANIFEST, limits=limits)
    assert "s.zip" in str(info.value)
    assert list(workdir.iterdir()) == []
    assert not list(tmp_path.rglob("evil.dcm"))


@pytest.fixture(scope="module")
def ct_files(patient: dict[str, Any]) -> dict[str, bytes]:
    return {n: patient["files"][n] for n in ("ct.nii.gz", "labels.nii.gz")}


CT_MANIFEST = {"images": [{"modality": "CT", "image": "ct.nii.gz", "mask": "labels.nii.gz", "rois": {"GTV": 1}}]}


def _shifted_labels(data: bytes, tmp: Path) -> bytes:
    (tmp / "l.nii.gz").write_bytes(data)
    image = sitk.ReadImage(str(tmp / "l.nii.gz"))
    image.SetOrigin(tuple(o + 5.0 for o in image.GetOrigin()))
    sitk.WriteImage(image, str(tmp / "shifted.nii.gz"))
    return (tmp / "shifted.nii.gz").read_bytes()


def _rejected(loaded: LoadedModel, workdir: Path, files: dict[str, bytes] | list[tuple[str, bytes]], manifest: Any,
              error: type[Exception], match: str, **kwargs: Any) -> None:
    with pytest.raises(error, match=match) as info:
        upload(loaded, workdir, files, manifest, **kwargs)
    assert "/work/" not in str(info.value) and "upload-" not in str(info.value)  # no server paths leak
    assert not workdir.exists() or list(workdir.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"patient_id": "../P1"}, InputError, "form field patient_id '../P1' is not a pseudonymous ID"),
    ({"expression": '{"AR": NaN}'}, InputError, "form field expression: NaN is not a finite number"),
    ({"expression": '{"AR": 1e400}'}, InputError, "expression.AR must be a finite number, got Infinity"),
    ({"expression": {"AR": True}}, InputError, "expression.AR must be a finite number, got true"),
    ({"clinical": {"site": "brain"}}, InputError, "invalid_site"),
    ({"clinical": {"patient_id": "P2"}}, InputError, "clinical.patient_id \"P2\" differs"),
    ({"limits": UploadLimits(max_file_bytes=1000)}, UploadTooLarge, "than the limit of 1000 bytes per file"),
    ({"limits": UploadLimits(max_files=1)}, UploadTooLarge, "too many files: 2 uploaded file.s. brings the request"),
])
def test_bad_form_fields_rejected(loaded: LoadedModel, ct_files: dict[str, bytes], tmp_path: Path,
                                  kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    _rejected(loaded, tmp_path / "work", ct_files, CT_MANIFEST, error, match, **kwargs)


@pytest.mark.parametrize(("case", "match"), [
    ("manifest_not_json", r"form field manifest is not valid JSON \(Expecting"),
    ("manifest_unknown_key", "manifest has unknown key.s. dose"),
    ("manifest_bad_modality", r"manifest.images\[0\].modality \"PET\" is not one of"),
    ("manifest_bad_label", r"manifest.images\[0\].rois.GTV label must be an integer"),
    ("dose_with_mask", r"manifest.images\[0\] is a DOSE grid: it takes no mask"),
    ("not_uploaded", "manifest names file.s. that were not uploaded: labels.nii.gz"),
    ("not_referenced", "uploaded file.s. not named in manifest: extra.nii.gz"),
    ("../ct.nii.gz", "is a path, not a plain file name"),
    ("a/ct.nii.gz", "is a path, not a plain file name"),
    (".ct.nii.gz", "starts with a dot"),
    ("duplicate_name", "two uploaded files are named 'ct.nii.gz'"),
    ("mask_mismatch", r"geometry_mismatch \(patient P1, labels\.nii\.gz\): mask labels\.nii\.gz and image ct\.nii"),
])
def test_bad_files_or_manifest_rejected(loaded: LoadedModel, ct_files: dict[str, bytes], tmp_path: Path, case: str,
                                        match: str) -> None:
    files: dict[str, bytes] | list[tuple[str, bytes]] = dict(ct_files)
    manifest = json.loads(json.dumps(CT_MANIFEST))
    entry = manifest["images"][0]
    if case == "manifest_not_json":
        manifest = "{images: []}"
    elif case == "manifest_unknown_key":
        manifest["dose"] = "x"
    elif case.startswith("manifest_bad") or case == "dose_with_mask":
        entry.update({"manifest_bad_modality": {"modality": "PET"}, "manifest_bad_label": {"rois": {"GTV": True}},
                      "dose_with_mask": {"modality": "DOSE"}}[case])
    elif case in ("not_uploaded", "not_referenced"):
        files = {"ct.nii.gz": ct_files["ct.nii.gz"]} if case == "not_uploaded" else {**ct_files, "extra.nii.gz": b"x"}
    elif "ct.nii.gz" in case:  # an unsafe file name
        files, entry["image"] = {case: ct_files["ct.nii.gz"], "labels.nii.gz": ct_files["labels.nii.gz"]}, case
    elif case == "duplicate_name":
        files = [*ct_files.items(), ("ct.nii.gz", ct_files["ct.nii.gz"])]
    else:
        files = {**ct_files, "labels.nii.gz": _shifted_labels(ct_files["labels.nii.gz"], tmp_path)}
    _rejected(loaded, tmp_path / "work", files, manifest, InputError, match)


def test_total_size_limit(loaded: LoadedModel, ct_files: dict[str, bytes], tmp_path: Path) -> None:
    limits = UploadLimits(max_total_bytes=max(len(v) for v in ct_files.values()) + 10)
    _rejected(loaded, tmp_path / "work", ct_files, CT_MANIFEST, UploadTooLarge, "the uploads exceed the limit of",
              limits=limits)


def test_through_the_app(loaded: LoadedModel, ct_files: dict[str, bytes], patient: dict[str, Any],
                         tmp_path: Path) -> None:
    """The real route: a record (its hash in the audit log), a zip-slip 422 naming the entry, a 413."""
    from fastapi.testclient import TestClient

    from radiogenomics.serving.api import create_app
    from radiogenomics.serving.schemas import ServeLimits

    tokens, token = new_token(tmp_path)
    limits = ServeLimits(uploads=UploadLimits(max_file_bytes=max(len(v) for v in ct_files.values()) + 1))
    app = create_app(MODEL, tokens_file=tokens, audit_db=tmp_path / "audit.sqlite", workdir=tmp_path / "work",
                     limits=limits)
    form = {"patient_id": "P7", "manifest": json.dumps(CT_MANIFEST), "expression": json.dumps(patient["expression"]),
            "clinical": json.dumps({"site": "head_neck", "age_years": 61}), "n_fractions": "33"}
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        ok = client.post("/v1/prescriptions/images", data=form, files=[("files", (n, d)) for n, d in ct_files.items()])
        assert ok.status_code == 200, ok.text
        (record,) = ok.json()["records"]
        direct = upload(loaded, tmp_path / "direct", ct_files, CT_MANIFEST, patient_id="P7",
                        expression=patient["expression"], clinical={"site": "head_neck", "age_years": 61},
                        regimen={**NO_REGIMEN, "n_fractions": 33.0})
        assert _without_time(record) == _without_time(json.loads(json.dumps(direct[0])))
        assert record["n_fractions"] == 33 and "missing_genomics" not in record["flags"]
        row = app.state.audit.rows()[-1]
        assert (row["patient_id"], row["input_sha256"], row["status_code"]) == ("P7", record["input_sha256"], 200)

        slip = client.post("/v1/prescriptions/images", data={**form, "manifest": json.dumps(ZIP_MANIFEST)},
                           files=[("files", ("s.zip", _zip({"../../evil.dcm": b"x"})))])
        assert slip.status_code == 422 and "points outside the archive" in slip.text and "s.zip" in slip.text
        big = client.post("/v1/prescriptions/images", data=form,
                          files=[("files", (n, d + b"\0" * 2)) for n, d in ct_files.items()])
        assert big.status_code == 413 and "bytes per file" in big.text
    assert list((tmp_path / "work").iterdir()) == []
    assert not list(tmp_path.rglob("evil.dcm"))
