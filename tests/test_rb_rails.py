"""Safety rails as data: validation and application."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import (
    DVH,
    apply_rails,
    clip_voxel_doses,
    load_rails,
    ntcp_from_dvh,
    ntcp_parameters,
    parse_rails,
)


def test_packaged_rails_are_valid() -> None:
    rails = load_rails()
    for site in ("head_neck", "lung", "breast", "prostate", "other"):
        sr = rails.site(site)
        assert sr.min_total_dose_gy < sr.max_total_dose_gy <= sr.max_voxel_dose_gy
        assert sr.source
    assert rails.oars["parotid"].max_mean_dose_gy == 25.0
    assert rails.oars["lung"].max_mean_dose_gy == 20.0
    assert rails.oar("parotid_l") is rails.oars["parotid"]
    assert rails.oar("spleen") is None


def _doc() -> dict:
    return yaml.safe_load(Path(__file__).resolve().parents[1].joinpath(
        "radiogenomics/radiobiology/data/rails.yaml").read_text())


@pytest.mark.parametrize(("path", "value", "match"), [
    (("sites", "lung", "max_total_dose_gy"), -5.0, "positive"),
    (("sites", "lung", "max_total_dose_gy"), 40.0, "min_total_dose_gy > max_total_dose_gy"),
    (("sites", "lung", "source"), "", "source"),
    (("sites", "lung", "max_dose_gy_typo"), 3.0, "unknown keys"),
    (("oars", "parotid", "max_ntcp"), 1.5, "probability"),
    (("oars", "parotid", "endpoint"), "nonexistent", "unknown NTCP endpoint"),
])
def test_rails_validation(path: tuple[str, str, str], value: object, match: str) -> None:
    doc = copy.deepcopy(_doc())
    doc[path[0]][path[1]][path[2]] = value
    with pytest.raises(InputError, match=match):
        parse_rails(doc)


def test_load_rails_from_file(tmp_path: Path) -> None:
    p = tmp_path / "rails.yaml"
    p.write_text("sites: [1, 2]\n")
    with pytest.raises(InputError, match="sites"):
        load_rails(p)
    with pytest.raises(InputError, match="cannot read"):
        load_rails(tmp_path / "missing.yaml")


def test_clipping_flags() -> None:
    sr = load_rails().site("head_neck")
    inside = apply_rails(70.0, site="head_neck")
    assert inside.recommended_total_dose_gy == 70.0 and inside.flags == []
    high = apply_rails(95.0, site="head_neck")
    assert high.recommended_total_dose_gy == sr.max_total_dose_gy
    assert high.flags == ["clipped_max"]
    low = apply_rails(40.0, site="head_neck")
    assert low.recommended_total_dose_gy == sr.min_total_dose_gy
    assert low.flags == ["clipped_min"]
    with pytest.raises(InputError, match="no rails for site"):
        apply_rails(70.0, site="brain_stem")
    with pytest.raises(InputError, match="total_dose_gy"):
        apply_rails(math.nan, site="lung")
    with pytest.raises(InputError, match="total_dose_gy"):
        apply_rails(-1.0, site="lung")


def test_dose_per_fraction_rails() -> None:
    # 30 fractions at <= 2.4 Gy/fx caps head & neck at 72 Gy
    d = apply_rails(78.0, site="head_neck", n_fractions=30)
    assert d.recommended_total_dose_gy == pytest.approx(72.0)
    assert d.flags == ["clipped_max"]
    with pytest.raises(InputError, match="dose_per_fraction_gy"):
        apply_rails(70.0, site="head_neck", dose_per_fraction_gy=5.0)
    with pytest.raises(InputError, match="n_fractions"):
        apply_rails(70.0, site="head_neck", n_fractions=0)


def test_oar_limits_lower_the_maximum() -> None:
    # parotid planned at 70 Gy with mean dose 35 Gy: mean limit 25 Gy -> prescription <= 50 Gy,
    # below the head & neck minimum (60 Gy) -> no safe dose
    dose = np.array([20.0, 35.0, 50.0])
    vol = np.array([1.0, 1.0, 1.0])
    d = apply_rails(70.0, site="head_neck", oar_dvhs={"parotid_r": (dose, vol)}, reference_prescription_gy=70.0)
    assert not d.feasible
    assert math.isnan(d.recommended_total_dose_gy)
    assert set(d.flags) == {"clipped_max", "clipped_min"}
    # parotid mean 22 Gy at 70 Gy: NTCP limit 20 % -> ~82 Gy, mean limit 25 Gy -> 79.5 Gy
    dose2 = dose * 22.0 / 35.0
    d2 = apply_rails(85.0, site="prostate", oar_dvhs={"parotid": (dose2, vol)}, reference_prescription_gy=70.0)
    assert d2.flags == ["clipped_max"]
    assert d2.recommended_total_dose_gy == pytest.approx(70.0 * 25.0 / 22.0)
    assert d2.oar_max_prescription_gy["parotid:paired"] == pytest.approx(d2.recommended_total_dose_gy)
    # NTCP limit binding: rectum (no mean limit)
    rect = np.array([30.0, 60.0, 78.0])
    d3 = apply_rails(80.0, site="prostate", oar_dvhs={"rectum": (rect, vol)}, reference_prescription_gy=78.0)
    p = ntcp_parameters("proctitis")
    at = ntcp_from_dvh(rect * d3.recommended_total_dose_gy / 78.0, vol, td50_gy=p.td50_gy, m=p.m, n=p.n)
    assert d3.flags == ["clipped_max"]
    assert d3.recommended_total_dose_gy < 78.0
    assert at == pytest.approx(0.15, abs=1e-9)
    with pytest.raises(InputError, match="reference_prescription_gy"):
        apply_rails(70.0, site="head_neck", oar_dvhs={"parotid": (dose, vol)})


def test_parotids_follow_the_quantec_either_or_rule() -> None:
    """Deasy 2010 (QUANTEC): both glands mean < 25 Gy, or one gland mean < 20 Gy."""
    vol = np.ones(3)
    high = np.array([20.0, 35.0, 50.0])          # mean 35 Gy at 70 Gy
    spared = np.array([10.0, 15.0, 20.0])        # mean 15 Gy at 70 Gy
    d = apply_rails(70.0, site="head_neck", oar_dvhs={"parotid_l": (high, vol), "parotid_r": (spared, vol)},
                    reference_prescription_gy=70.0)
    # one gland spared: right stays < 20 Gy mean up to 70 * 20 / 15 = 93.3 Gy, so the site max (80) binds
    assert d.feasible and d.flags == [] and d.recommended_total_dose_gy == 70.0
    assert d.oar_max_prescription_gy["parotid:paired"] == pytest.approx(70.0 * 20.0 / 15.0)
    # both glands at 30 Gy mean: both < 25 Gy needs <= 58.3 Gy, one < 20 Gy needs <= 46.7 Gy -> below 60
    both = high * 30.0 / 35.0
    d2 = apply_rails(70.0, site="head_neck", oar_dvhs={"parotid_l": (both, vol), "parotid_r": (both, vol)},
                     reference_prescription_gy=70.0)
    assert not d2.feasible
    assert d2.oar_max_prescription_gy["parotid:paired"] == pytest.approx(70.0 * 25.0 / 30.0)
    # both glands at 22 Gy: "both < 25" allows 79.5 Gy; a prescription of 85 is clipped there
    mid = high * 22.0 / 35.0
    d3 = apply_rails(85.0, site="prostate", oar_dvhs={"parotid_l": (mid, vol), "parotid_r": (mid, vol)},
                     reference_prescription_gy=70.0)
    assert d3.flags == ["clipped_max"] and d3.recommended_total_dose_gy == pytest.approx(70.0 * 25.0 / 22.0)


def test_spinal_cord_max_dose_and_unknown_oar() -> None:
    cord = DVH(structure="spinal_cord", dose_gy=np.array([10.0, 40.0]), volume_cc=np.array([1.0, 1.0]),
               bin_width_gy=1.0, voxel_volume_cc=1.0, mean_dose_gy=25.0, min_dose_gy=10.0, max_dose_gy=40.0,
               n_voxels=2)
    d = apply_rails(70.0, site="head_neck", oar_dvhs={"spinal_cord": cord, "spleen": cord},
                    reference_prescription_gy=70.0)
    assert d.oar_max_prescription_gy["spinal_cord:max_dose"] == pytest.approx(70.0 * 50.0 / 40.0)
    assert any("spleen" in r for r in d.reasons)


@given(dose=st.floats(0.0, 500.0), site=st.sampled_from(["head_neck", "lung", "breast", "prostate", "other"]),
       n=st.one_of(st.none(), st.integers(1, 45)))
def test_never_outside_the_rails(dose: float, site: str, n: int | None) -> None:
    d = apply_rails(dose, site=site, n_fractions=n)
    if d.feasible:
        assert d.lower_limit_gy <= d.recommended_total_dose_gy <= d.upper_limit_gy
        sr = load_rails().site(site)
        assert sr.min_total_dose_gy <= d.recommended_total_dose_gy <= sr.max_total_dose_gy
        if n is not None:
            assert d.recommended_total_dose_gy <= n * sr.max_dose_per_fraction_gy + 1e-9
    else:
        assert math.isnan(d.recommended_total_dose_gy)


def test_clip_voxel_doses() -> None:
    out, flags = clip_voxel_doses(np.array([50.0, 100.0]), site="head_neck")
    assert out.max() == load_rails().site("head_neck").max_voxel_dose_gy
    assert flags == ["clipped_max"]
    out, flags = clip_voxel_doses(np.array([50.0, 60.0]), site="head_neck")
    assert flags == []
