"""RSI slot mapping: `extract --rsi-gene-map CDK1=PAK2`, `rsi_gene_map:` in cohort.yaml, and a loud warning
when the RSI cannot be computed for anyone because a slot's column is absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from radiogenomics.cli.app import main
from radiogenomics.cohort import load_cohort, validate_cohort
from radiogenomics.cohort.rsi_gene_map import gene_map_from_yaml, parse_gene_map_args
from radiogenomics.errors import InputError
from radiogenomics.features.pipeline import ExtractOptions, _run_options, output_paths
from radiogenomics.features.uptodate import run_key
from radiogenomics.radiobiology import RSI_COEFFICIENTS, RSI_GENES


def test_parse_pairs() -> None:
    assert parse_gene_map_args(["CDK1=PAK2"]) == {"CDK1": "PAK2"}
    assert parse_gene_map_args(["c-Jun=JUN_probe, cdk1=PAK2", "PKC-beta=PRKCB_2"]) == {
        "JUN": "JUN_probe", "CDK1": "PAK2", "PRKCB": "PRKCB_2"}  # symbols or the paper's slot names
    assert parse_gene_map_args(["p34cdc2=PAK2"]) == {"CDK1": "PAK2"}
    assert parse_gene_map_args(["CDK1=CDK1"]) == {"CDK1": "CDK1"}  # kept: undoes a cohort.yaml mapping


@pytest.mark.parametrize(("value", "match"), [
    ("CDK2=PAK2", "'CDK2' is not an RSI slot"), ("CDK1", "not SLOT=GENE"), ("CDK1=", "needs one expression column"),
    ("CDK1=PAK 2", "needs one expression column"), ("CDK1=PAK2,CDK1=X", "mapped twice"),
    ("CDK1=JUN", "JUN and CDK1 would both read column JUN"), ("CDK1=X,AR=X", "would both read column X"),
])
def test_bad_pairs_are_input_errors(value: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        parse_gene_map_args([value])
    assert "--rsi-gene-map" in str(info.value)


def test_yaml_value_is_checked() -> None:
    assert gene_map_from_yaml({"CDK1": "PAK2"}) == {"CDK1": "PAK2"}
    assert gene_map_from_yaml(None) == {}
    with pytest.raises(InputError, match="mapping"):
        gene_map_from_yaml(["CDK1", "PAK2"])
    with pytest.raises(InputError, match="'CDK9' is not an RSI slot"):
        gene_map_from_yaml({"CDK9": "PAK2"})


def _pak2_cohort(synth_cohort: Path, dst: Path, yaml_map: dict[str, str] | None = None) -> pd.DataFrame:
    """patients.csv and expression.csv of the synthetic cohort with the CDK1 column exported as PAK2 (the
    authors' array probe for that slot); returns the original expression."""
    dst.mkdir(parents=True)
    shutil.copy(synth_cohort / "patients.csv", dst / "patients.csv")
    expression = pd.read_csv(synth_cohort / "expression.csv", dtype={"patient_id": str})
    expression.rename(columns={"CDK1": "PAK2"}).to_csv(dst / "expression.csv", index=False)
    meta = {"name": "pak2", "format_version": 1}
    if yaml_map is not None:
        meta["rsi_gene_map"] = yaml_map
    (dst / "cohort.yaml").write_text(yaml.safe_dump(meta))
    return expression.set_index("patient_id")


def _expected_rsi(expression: pd.DataFrame) -> pd.Series:
    """RSI recomputed here from the published coefficients: within-sample ranks (R's rank, ties averaged)."""
    values = expression[list(RSI_GENES)].to_numpy(dtype=float)
    ranks = pd.DataFrame(values).rank(axis=1, method="average").to_numpy()
    return pd.Series(ranks @ np.array([RSI_COEFFICIENTS[g] for g in RSI_GENES]), index=expression.index.astype(str))


def _extract(cohort: Path, out: Path, *extra: str) -> int:
    return main(["extract", str(cohort), "--out", str(out), "--workers", "1", "--no-progress",
                 "--cache-dir", str(out.parent / "cache"), *extra])


def _rsi(out: Path) -> pd.Series:
    table = pd.read_parquet(out).set_index("patient_id")
    return table["genomic.rsi"]


def test_extract_warns_loudly_then_maps_the_slot(synth_cohort: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "cohort"
    original = _pak2_cohort(synth_cohort, cohort)
    out = tmp_path / "features.parquet"

    # without a map: exit 0 but a loud warning naming the gene and both fixes, in stderr and the summary
    assert _extract(cohort, out) == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if line.startswith("warning: "))
    assert "genomic.rsi is NaN for every patient" in warning and "CDK1" in warning and "PAK2" in warning
    assert "--rsi-gene-map CDK1=PAK2" in warning and "rsi_gene_map: {CDK1: PAK2}" in warning
    assert _rsi(out).isna().all()
    summary = json.loads(output_paths(out)[2].read_text())
    assert summary["warnings"] == [warning.removeprefix("warning: ")]
    assert _extract(cohort, out) == 0  # an up-to-date re-run repeats the warning
    rerun = capsys.readouterr()
    assert "up to date" in rerun.out and warning in rerun.err

    # with the map on the command line: the RSI of every patient, no warning, and not "up to date"
    assert _extract(cohort, out, "--rsi-gene-map", "CDK1=PAK2") == 0
    mapped = capsys.readouterr()
    assert "up to date" not in mapped.out and "warning" not in mapped.err
    expected = _expected_rsi(original)
    assert np.allclose(_rsi(out).loc[expected.index], expected, rtol=0, atol=1e-12)
    assert json.loads(output_paths(out)[2].read_text())["warnings"] == []


def test_cohort_yaml_key_and_command_line_override(synth_cohort: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "cohort"
    original = _pak2_cohort(synth_cohort, cohort, yaml_map={"CDK1": "PAK2"})
    assert load_cohort(cohort).rsi_gene_map == {"CDK1": "PAK2"}
    report = validate_cohort(cohort)
    assert report.ok and not [p for p in report.problems if p.code == "rsi_slot_substitute"]
    out = tmp_path / "features.parquet"
    assert _extract(cohort, out) == 0
    assert "warning" not in capsys.readouterr().err
    expected = _expected_rsi(original)
    assert np.allclose(_rsi(out).loc[expected.index], expected, rtol=0, atol=1e-12)
    # the command line overrides the file slot by slot: CDK1=CDK1 reads the (absent) CDK1 column again
    assert _extract(cohort, tmp_path / "override.parquet", "--rsi-gene-map", "CDK1=CDK1") == 0
    assert "--rsi-gene-map CDK1=PAK2" in capsys.readouterr().err
    assert _rsi(tmp_path / "override.parquet").isna().all()


def test_bad_map_exits_2_with_one_line(synth_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "cohort"
    _pak2_cohort(synth_cohort, cohort)
    assert _extract(cohort, tmp_path / "f.parquet", "--rsi-gene-map", "CDK2=PAK2") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "CDK2" in err and "CDK1" in err
    assert _extract(cohort, tmp_path / "f.parquet", "--rsi-gene-map", "CDK1=NOT_A_COLUMN") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "NOT_A_COLUMN" in err
    (cohort / "cohort.yaml").write_text("format_version: 1\nrsi_gene_map: {CDK7: PAK2}\n")
    problems = [p for p in validate_cohort(cohort).problems if p.code == "invalid_rsi_gene_map"]
    assert len(problems) == 1 and "CDK7" in problems[0].message and problems[0].file == "cohort.yaml"
    assert _extract(cohort, tmp_path / "f.parquet") == 2
    assert "CDK7" in capsys.readouterr().err


def test_validator_fix_text_names_both_ways(synth_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    _pak2_cohort(synth_cohort, cohort)
    problem = next(p for p in validate_cohort(cohort).problems if p.code == "rsi_slot_substitute")
    assert "--rsi-gene-map CDK1=PAK2" in problem.fix and "rsi_gene_map: {CDK1: PAK2}" in problem.fix
    assert "cohort.yaml" in problem.fix


def test_run_key_includes_the_map(synth_cohort: Path) -> None:
    plain = run_key(synth_cohort, _run_options(ExtractOptions()))
    mapped = run_key(synth_cohort, _run_options(ExtractOptions(rsi_gene_map={"CDK1": "PAK2"})))
    assert plain is not None and mapped is not None and plain != mapped
