"""pyradiomics against the IBSI 1 digital-phantom reference values."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from radiogenomics.features import ibsi

DOCS = Path(__file__).resolve().parents[1] / "docs" / "features.md"


@pytest.fixture(scope="module")
def comparison(ibsi_dir: Path) -> pd.DataFrame:
    return ibsi.compare(ibsi_dir)


def test_every_reference_row_has_a_status(comparison: pd.DataFrame, ibsi_dir: Path) -> None:
    reference = ibsi.load_reference(ibsi_dir)
    assert len(comparison) == len(reference) == 487
    assert set(comparison["status"]) <= {"match", "deviation", "mismatch", "not_implemented", "no_reference"}
    assert (comparison["status"] != "").all()
    unexplained = comparison[comparison["status"].isin(["not_implemented", "no_reference"])
                             & (comparison["note"] == "")]
    assert unexplained.empty, unexplained["tag"].tolist()


def test_implemented_features_match_within_tolerance(comparison: pd.DataFrame) -> None:
    bad = comparison[comparison["status"] == "mismatch"]
    assert bad.empty, bad[["tag", "pyradiomics", "reference", "value", "allowed"]].to_string()
    compared = comparison[comparison["status"] == "match"]
    assert (compared["difference"].abs() <= compared["allowed"]).all()
    # all four pyradiomics aggregations and every implemented family take part
    assert set(compared["config"]) == set(ibsi.CONFIGS)
    assert {t.split("_")[0] for t in compared["tag"]} == {"morph", "stat", "ih", "cm", "rlm", "szm", "ngt", "ngl"}


def test_known_deviations_are_reconciled_by_their_correction(comparison: pd.DataFrame) -> None:
    deviations = comparison[comparison["status"] == "deviation"]
    assert not deviations.empty
    for rec in deviations.to_dict("records"):
        assert abs(rec["value"] - rec["reference"]) > rec["allowed"]
        assert abs(rec["corrected"] - rec["reference"]) <= rec["allowed"], rec["tag"]


def test_deviations_are_documented(comparison: pd.DataFrame) -> None:
    text = DOCS.read_text(encoding="utf-8")
    for tag in comparison.loc[comparison["status"] == "deviation", "tag"]:
        assert f"`{tag}`" in text, f"{tag} deviates from IBSI but docs/features.md does not list it"
    for stem in ibsi.DEVIATIONS:
        assert stem in text


def test_zero_tolerance_means_three_significant_digits(comparison: pd.DataFrame) -> None:
    assert ibsi.allowed_difference(2.15, 0.0) == pytest.approx(0.005)
    assert ibsi.allowed_difference(0.00963, 0.0) == pytest.approx(0.000005)
    assert ibsi.allowed_difference(1490.0, 0.0) == pytest.approx(5.0)
    assert ibsi.allowed_difference(556.0, 4.0) == 4.0
    for ref in comparison["reference"].dropna():
        if ref != 0:
            digits = math.floor(math.log10(abs(ref))) - 2
            assert round(ref, -digits) == pytest.approx(ref), ref


def test_tag_mapping() -> None:
    assert ibsi.map_tag("cm_joint_max_3D_avg") == ("original_glcm_MaximumProbability", "3D", None)
    assert ibsi.map_tag("rlm_sre_2_5D_comb") == ("original_glrlm_ShortRunEmphasis", "2.5D_merged", None)
    assert ibsi.map_tag("ngl_hde_3D") == ("original_gldm_LargeDependenceEmphasis", "3D", None)
    key, config, reason = ibsi.map_tag("cm_joint_max_2D_avg")
    assert key is None and config is None and reason
    key, config, reason = ibsi.map_tag("dzm_sde_3D")
    assert key is None and reason and "distance zone" in reason
