"""Content-addressed cache: keys change with any input byte, parameter, library version or package file; atomic
writes."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_features_helpers import subset_cohort, write_fast_params

from radiogenomics.cohort import load_cohort
from radiogenomics.features import cache as cache_mod
from radiogenomics.features import provenance
from radiogenomics.features.cache import FeatureCache, atomic_write_bytes, file_digest, item_key
from radiogenomics.features.pipeline import ExtractOptions, build_items, output_paths
from radiogenomics.features.tasks import CODE, DEEP, DOSE, RADIOMICS


def test_file_digest_follows_content(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    d1 = file_digest(f)
    assert d1 == file_digest(f)
    f.write_bytes(b"hellp")  # same size, different byte
    assert file_digest(f) != d1
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"x")
    (series / "2.dcm").write_bytes(b"y")
    s1 = file_digest(series)
    (series / "2.dcm").write_bytes(b"z")
    assert file_digest(series) != s1
    (series / "3.dcm").write_bytes(b"w")
    assert file_digest(series) not in (s1,)


def test_item_key_depends_on_files_params_and_versions(tmp_path: Path) -> None:
    image, mask = tmp_path / "img", tmp_path / "mask"
    image.write_bytes(b"image")
    mask.write_bytes(b"mask")
    base = item_key("radiomics", [image, mask], {"binWidth": 25}, ("numpy",))
    assert base == item_key("radiomics", [image, mask], {"binWidth": 25}, ("numpy",))
    assert base != item_key("radiomics", [image, mask], {"binWidth": 10}, ("numpy",))
    assert base != item_key("deep", [image, mask], {"binWidth": 25}, ("numpy",))
    assert base != item_key("radiomics", [mask, image], {"binWidth": 25}, ("numpy",))
    assert base != item_key("radiomics", [image, mask], {"binWidth": 25}, ("numpy", "scipy"))
    mask.write_bytes(b"mask2")
    assert base != item_key("radiomics", [image, mask], {"binWidth": 25}, ("numpy",))


def test_library_version_is_part_of_the_key(tmp_path: Path) -> None:
    versions = cache_mod.library_versions(("numpy", "not-a-real-package-xyz"))
    assert versions["not-a-real-package-xyz"] == "absent"
    assert versions["numpy"][0].isdigit()


def test_round_trip_keeps_non_finite_values(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "c")
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, {"x": 1.5, "nan": float("nan"), "inf": float("inf")})
    got = cache.get("ab" * 32)
    assert got is not None
    assert got["x"] == 1.5 and math.isnan(got["nan"]) and got["inf"] == math.inf
    assert cache.keys() == ["ab" * 32]
    assert len(cache) == 1


def test_corrupt_entry_reads_as_absent(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = "cd" * 32
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_text('{"features": {"x": 1.0')  # truncated JSON
    assert cache.get(key) is None


def test_atomic_write_never_leaves_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_bytes(target, b"old complete content")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]  # fails inside the write
    assert target.read_bytes() == b"old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # the temporary file was removed


# ---------------------------------------------------------------- the package's own code and data in the keys

PACKAGE_DIR = Path(provenance.__file__).resolve().parents[1]


def _package_copy(tmp_path: Path) -> Path:
    """A copy of the installed package (code and data) to edit; returns the copy's package folder."""
    dst = tmp_path / "pkg" / "radiogenomics"
    shutil.copytree(PACKAGE_DIR, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def _digests(root: Path) -> dict[str, str]:
    provenance.code_digest.cache_clear()  # as a new process would: the digest is computed once per process
    provenance.package_digest.cache_clear()
    out = {kind: provenance.code_digest(deps, root) for kind, deps in CODE.items()}
    out["run"] = provenance.package_digest(root)
    return out


def test_item_kinds_depend_on_their_own_code_and_data() -> None:
    files = {kind: {p.relative_to(PACKAGE_DIR).as_posix() for p in provenance.dependency_files(deps)}
             for kind, deps in CODE.items()}
    readers = {"cohort/imageio.py", "cohort/rtstruct.py", "cohort/dicom.py", "cohort/geometry.py"}
    for kind in (RADIOMICS, DEEP, DOSE):
        assert readers <= files[kind], kind  # followed through imports: the RTSTRUCT rasteriser counts
    radiomics = {"features/radiomics_extraction.py", "features/params/CT.yaml", "features/params/PET.yaml"}
    assert radiomics <= files[RADIOMICS]
    assert {"features/dosimetric.py", "features/data/geud_a.yaml", "radiobiology/dvh.py"} <= files[DOSE]
    assert "features/deep.py" in files[DEEP]
    unrelated = {"features/genomic.py", "features/data/hypoxia_toustrup2011.yaml", "features/fusion.py",
                 "radiobiology/rails.py", "cohort/validate.py"}
    for kind in (RADIOMICS, DEEP, DOSE):
        assert not unrelated & files[kind], (kind, unrelated & files[kind])
    assert "features/dosimetric.py" not in files[RADIOMICS] and "features/deep.py" not in files[DOSE]


def test_every_data_file_a_dependency_names_is_a_dependency() -> None:
    """A module of a kind that names a data file (``"geud_a.yaml"``) must have that file in the kind's key."""
    for kind, deps in CODE.items():
        names = {p.name for p in provenance.dependency_files(deps)}
        for module in provenance.module_closure(PACKAGE_DIR / m for m in deps.modules):
            for node in ast.walk(ast.parse(module.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                        re.fullmatch(r"[\w/.-]+\.(yaml|yml|csv|json)", node.value):
                    assert Path(node.value).name in names, (kind, module.name, node.value)


def test_changing_a_package_file_changes_exactly_the_keys_that_depend_on_it(tmp_path: Path) -> None:
    root = _package_copy(tmp_path)
    base = _digests(root)
    assert base == _digests(root)
    assert base[RADIOMICS] == _digests(PACKAGE_DIR)[RADIOMICS]  # a copy of the same bytes: the same key

    signature = root / "features" / "data" / "hypoxia_toustrup2011.yaml"
    signature.write_text(signature.read_text().replace("  ADM: 1", "  ADM: -1"))
    after_signature = _digests(root)
    assert after_signature["run"] != base["run"]
    assert {k: after_signature[k] for k in CODE} == {k: base[k] for k in CODE}  # no item uses signatures

    geud = root / "features" / "data" / "geud_a.yaml"
    geud.write_text(geud.read_text() + "\n# edited\n")
    after_geud = _digests(root)
    assert after_geud[DOSE] != after_signature[DOSE] and after_geud["run"] != after_signature["run"]
    assert after_geud[RADIOMICS] == base[RADIOMICS] and after_geud[DEEP] == base[DEEP]

    ct = root / "features" / "params" / "CT.yaml"
    ct.write_text(ct.read_text().replace("binWidth: 25", "binWidth: 20"))
    after_ct = _digests(root)
    assert after_ct[RADIOMICS] != after_geud[RADIOMICS]
    assert after_ct[DOSE] == after_geud[DOSE] and after_ct[DEEP] == after_geud[DEEP]

    rtstruct = root / "cohort" / "rtstruct.py"
    rtstruct.write_text(rtstruct.read_text() + "\n# a changed rasteriser\n")
    after_rt = _digests(root)
    assert all(after_rt[k] != after_ct[k] for k in (RADIOMICS, DEEP, DOSE, "run"))


def test_item_key_includes_the_code_digest(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(b"image")
    assert item_key("radiomics", [image], {}, ("numpy",), code="a") != item_key("radiomics", [image], {},
                                                                                ("numpy",), code="b")


def _extract_with(package_parent: Path, cohort: Path, out: Path, cache: Path,
                  params: Path) -> subprocess.CompletedProcess[str]:
    """`radiogenomics extract` in a fresh process importing the package from ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([sys.executable, "-m", "radiogenomics", "extract", str(cohort), "--out", str(out),
                           "--cache-dir", str(cache), "--params", str(params), "--workers", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=package_parent)


def test_extract_recomputes_what_an_edited_package_file_affects(synth_cohort: Path, tmp_path: Path) -> None:
    """The issue's stale cache: an edited signature YAML used to leave extract "up to date" with old values."""
    cohort = tmp_path / "cohort"
    subset_cohort(synth_cohort, cohort, 1)
    params = write_fast_params(tmp_path / "fast.yaml")
    items = build_items(load_cohort(cohort), ExtractOptions(params=params))
    n_dose = sum(i.kind == DOSE for i in items)
    assert n_dose and len(items) > n_dose
    root = _package_copy(tmp_path)
    out, cache = tmp_path / "features.parquet", tmp_path / "cache"

    def run() -> tuple[dict[str, object], pd.DataFrame, str]:
        res = _extract_with(root.parent, cohort, out, cache, params)
        assert res.returncode == 0, res.stderr
        summary = json.loads(output_paths(out)[2].read_text())
        return summary, pd.read_parquet(out), res.stdout

    first, table1, _ = run()
    assert first["computed"] == len(items)
    again, _, stdout = run()
    assert again["up_to_date"] and "up to date" in stdout  # nothing changed: the run is skipped

    signature = root / "features" / "data" / "hypoxia_toustrup2011.yaml"
    signature.write_text(signature.read_text().replace("  ADM: 1", "  ADM: -1"))
    second, table2, stdout = run()
    assert not second["up_to_date"] and "up to date" not in stdout
    assert second["computed"] == 0 and second["cached"] == len(items)  # no item depends on the signatures
    column = "genomic.hypoxia_toustrup2011"
    assert table2[column].iloc[0] != pytest.approx(table1[column].iloc[0])

    geud = root / "features" / "data" / "geud_a.yaml"
    geud.write_text(geud.read_text().replace("  parotid:\n    a: 1.0", "  parotid:\n    a: 4.0"))
    third, table3, _ = run()
    assert not third["up_to_date"]
    assert third["computed"] == n_dose and third["cached"] == len(items) - n_dose  # only the dose items
    geud_column = "dose.parotid_l.geud_gy"
    assert table3[geud_column].iloc[0] > table2[geud_column].iloc[0]  # a = 4 weights the hot voxels
    radiomics = [c for c in table1.columns if c.startswith("ct.")]
    pd.testing.assert_frame_equal(table3[radiomics], table1[radiomics])
