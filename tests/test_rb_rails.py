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
    FLAG_UNRECOGNISED_STRUCTURE,
    apply_rails,
    clip_voxel_doses,
    compute_dvh,
    load_rails,
    ntcp_from_dvh,
    ntcp_parameters,
    oar_max_prescriptions,
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
    (("oars", "spinal_cord", "hard"), "yes", "hard must be true"),
    (("sites", "lung", "standard_n_fractions"), 30.5, "whole number"),
    (("sites", "lung", "standard_total_dose_gy"), 90.0, "outside the site's own rails"),
    (("sites", "lung", "population_source"), "", "population_source"),
    (("lq_plausible", "max_alpha_per_gy"), 0.01, "minimum must be below"),
])
def test_rails_validation(path: tuple[str, ...], value: object, match: str) -> None:
    doc = copy.deepcopy(_doc())
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(InputError, match=match):
        parse_rails(doc)


def test_every_oar_says_whether_its_limit_is_hard_and_sites_have_a_standard_regimen() -> None:
    rails = load_rails()
    assert {k for k, v in rails.oars.items() if v.hard} == {"spinal_cord", "brainstem", "optic_nerve", "optic_chiasm"}
    hn = rails.site("head_neck")
    assert (hn.standard_total_dose_gy, hn.standard_n_fractions) == (70.0, 35)
    assert hn.standard_dose_per_fraction_gy == pytest.approx(2.0)
    assert rails.site("prostate").population_alpha_beta_gy == 1.5
    # a measured RSI of 0.003 gives alpha = -ln(0.003)/2 - 0.1 = 2.80 /Gy: implausible
    assert rails.lq.problems(-math.log(0.003) / 2 - 0.1, 0.05)
    assert rails.lq.problems(0.3, 0.05) == []
    doc = _doc()
    del doc["oars"]["spinal_cord"]["hard"]
    with pytest.raises(InputError, match="hard"):
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
    with pytest.raises(InputError, match="'spleen'") as err:
        apply_rails(70.0, site="head_neck", oar_dvhs={"spinal_cord": cord, "spleen": cord},
                    reference_prescription_gy=70.0)
    assert "TG-263" in str(err.value) and "structure_aliases.yaml" in str(err.value)
    d = apply_rails(70.0, site="head_neck", oar_dvhs={"spinal_cord": cord, "spleen": cord},
                    reference_prescription_gy=70.0, unknown_structures="flag")
    assert d.oar_max_prescription_gy["spinal_cord:max_dose"] == pytest.approx(70.0 * 50.0 / 40.0)
    assert d.flags == [FLAG_UNRECOGNISED_STRUCTURE] and d.unrecognised_structures == ["spleen"]
    assert any("spleen" in r and "unrecognised" in r for r in d.reasons)
    with pytest.raises(InputError, match="unknown_structures"):
        apply_rails(70.0, site="head_neck", oar_dvhs={"spleen": cord}, reference_prescription_gy=70.0,
                    unknown_structures="ignore")  # type: ignore[arg-type]


def _cord_dvh(max_dose_gy: float) -> DVH:
    """A cord whose hottest voxel gets ``max_dose_gy`` (numpy dose grid, 0.1 cc voxels)."""
    dose = np.linspace(5.0, max_dose_gy, 50).reshape(2, 5, 5)
    return compute_dvh(dose, np.ones_like(dose, dtype=np.uint8), voxel_volume_cc=0.1, structure="SpinalCord")


@pytest.mark.parametrize("name", ["SpinalCord", "spinal_cord", "Spinal Cord", "cord", "SPINAL-CORD", "SpinalCanal"])
def test_issue_example_tg263_cord_is_limited(name: str) -> None:
    """Issue 7: SpinalCord Dmax 48 Gy at 70 Gy; 80 Gy requested -> 70 * 50 / 48 = 72.9 Gy, clipped_max."""
    cord = _cord_dvh(48.0)
    assert cord.max_dose_gy == pytest.approx(48.0)
    d = apply_rails(80, site="head_neck", oar_dvhs={name: cord}, reference_prescription_gy=70)
    assert d.recommended_total_dose_gy == pytest.approx(70.0 * 50.0 / 48.0)
    assert d.recommended_total_dose_gy == pytest.approx(72.9, abs=0.05)
    assert d.flags == ["clipped_max"]
    assert d.oar_max_prescription_gy == {f"{name}:max_dose": pytest.approx(70.0 * 50.0 / 48.0)}


@pytest.mark.parametrize(("name", "dmax_or_mean", "limit_gy", "kind"), [
    ("Brainstem", 60.0, 54.0, "max_dose"),       # Mayo 2010 S36
    ("brain stem", 60.0, 54.0, "max_dose"),
    ("OpticNrv_L", 62.0, 55.0, "max_dose"),      # Mayo 2010 S28
    ("OpticChiasm", 58.0, 55.0, "max_dose"),
    ("Bone_Mandible", 75.0, 70.0, "max_dose"),   # institutional (not QUANTEC)
    ("Cochlea_R", 50.0, 45.0, "mean_dose"),      # Bhandare 2010 S50
    ("Larynx", 50.0, 44.0, "mean_dose"),         # Rancati 2010 S64
    ("Esophagus", 40.0, 34.0, "mean_dose"),      # Werner-Wasik 2010 S86
])
def test_quantec_head_neck_limits(name: str, dmax_or_mean: float, limit_gy: float, kind: str) -> None:
    dose = np.full(4, dmax_or_mean)  # uniform: mean = max
    d = apply_rails(78.0, site="head_neck", oar_dvhs={name: (dose, np.ones(4))}, reference_prescription_gy=70.0)
    assert d.oar_max_prescription_gy[f"{name}:{kind}"] == pytest.approx(70.0 * limit_gy / dmax_or_mean)
    assert d.recommended_total_dose_gy == pytest.approx(max(70.0 * limit_gy / dmax_or_mean, 60.0)) or not d.feasible


def test_new_rails_rows_cite_their_sources() -> None:
    oars = load_rails().oars
    expected = {"brainstem": ("max_dose_gy", 54.0, "S36"), "optic_nerve": ("max_dose_gy", 55.0, "S28"),
                "optic_chiasm": ("max_dose_gy", 55.0, "S28"), "cochlea": ("max_mean_dose_gy", 45.0, "S50"),
                "larynx": ("max_mean_dose_gy", 44.0, "S64"), "esophagus": ("max_mean_dose_gy", 34.0, "S86"),
                "submandibular_gland": ("max_mean_dose_gy", 35.0, "Murdoch-Kinch"),
                "mandible": ("max_dose_gy", 70.0, "NOT a QUANTEC")}
    for organ, (key, value, cite) in expected.items():
        assert getattr(oars[organ], key) == value, organ
        assert cite in oars[organ].source, organ


def test_targets_outline_and_unlimited_organs_are_noted_not_flagged() -> None:
    vol = np.ones(3)
    hot = (np.array([60.0, 70.0, 75.0]), vol)
    cord = (np.array([10.0, 20.0, 40.0]), vol)
    d = apply_rails(70.0, site="head_neck", reference_prescription_gy=70.0,
                    oar_dvhs={"PTV70": hot, "GTV": hot, "BODY": hot, "Brain": cord, "Musc_Constrict": hot,
                              "SpinalCord": cord})
    assert d.flags == [] and d.unrecognised_structures == []
    assert set(d.oar_max_prescription_gy) == {"SpinalCord:max_dose"}
    text = " | ".join(d.reasons)
    for name in ("PTV70", "GTV"):
        assert f"{name} is a target volume" in text
    assert "BODY is the body outline" in text
    assert "Brain (Brain): recognised organ with no limit" in text
    assert "Musc_Constrict (Musc_Constrict): recognised organ with no limit" in text


def test_lungs_are_checked_together() -> None:
    """QUANTEC mean lung dose is for both lungs: Lung_L and Lung_R are added into one DVH."""
    left = (np.array([20.0, 40.0]), np.array([500.0, 500.0]))   # mean 30 Gy, 1000 cc
    right = (np.array([5.0, 15.0]), np.array([1500.0, 1500.0]))  # mean 10 Gy, 3000 cc
    d = apply_rails(60.0, site="lung", oar_dvhs={"Lung_L": left, "Lung_R": right}, reference_prescription_gy=60.0)
    # combined mean = (30 * 1000 + 10 * 3000) / 4000 = 15 Gy -> 60 * 20 / 15 = 80 Gy
    assert d.oar_max_prescription_gy["Lung_L+Lung_R:mean_dose"] == pytest.approx(80.0)
    dose = np.concatenate([left[0], right[0]])
    vol = np.concatenate([left[1], right[1]])
    p = ntcp_parameters("pneumonitis")
    at = ntcp_from_dvh(dose * d.oar_max_prescription_gy["Lung_L+Lung_R:ntcp"] / 60.0, vol, td50_gy=p.td50_gy,
                       m=p.m, n=p.n)
    assert at == pytest.approx(0.20, abs=1e-9)
    # the whole-organ DVH wins over its sides
    whole = (np.array([10.0, 20.0]), np.array([1.0, 1.0]))  # mean 15 Gy
    d2 = apply_rails(60.0, site="lung", oar_dvhs={"Lungs": whole, "Lung_L": left}, reference_prescription_gy=60.0)
    assert d2.oar_max_prescription_gy["Lungs:mean_dose"] == pytest.approx(80.0)
    assert not any(k.startswith("Lung_L") for k in d2.oar_max_prescription_gy)
    assert any("Lung_L: not checked on its own" in r for r in d2.reasons)
    # one side alone: the whole-lung limit applies to it (stricter)
    d3 = apply_rails(60.0, site="lung", oar_dvhs={"Lung_L": left}, reference_prescription_gy=60.0)
    assert d3.oar_max_prescription_gy["Lung_L:mean_dose"] == pytest.approx(40.0)


def test_submandibular_glands_need_one_spared_gland() -> None:
    vol = np.ones(2)
    ipsi = (np.full(2, 60.0), vol)
    contra = (np.full(2, 20.0), vol)
    d = apply_rails(70.0, site="head_neck", oar_dvhs={"Glnd_Submand_L": ipsi, "Glnd_Submand_R": contra},
                    reference_prescription_gy=70.0)
    assert d.oar_max_prescription_gy["submandibular_gland:paired"] == pytest.approx(70.0 * 35.0 / 20.0)
    both = apply_rails(70.0, site="head_neck", oar_dvhs={"SMG_L": (np.full(2, 50.0), vol),
                                                         "SMG_R": (np.full(2, 40.0), vol)},
                       reference_prescription_gy=70.0)
    assert both.oar_max_prescription_gy["submandibular_gland:paired"] == pytest.approx(70.0 * 35.0 / 40.0)
    assert both.flags == ["clipped_max"] and both.recommended_total_dose_gy == pytest.approx(61.25)


def test_oar_lookup_by_alias() -> None:
    rails = load_rails()
    assert rails.oar("SpinalCord") is rails.oars["spinal_cord"]
    assert rails.oar("lt_parotid") is rails.oars["parotid"]
    assert rails.oar("OpticNrv_R") is rails.oars["optic_nerve"]
    assert rails.oar("PTV70") is None and rails.oar("BODY") is None and rails.oar("Brain") is None
    doc = _doc()
    doc["oars"]["spleen"] = {"max_mean_dose_gy": 10.0, "hard": False, "source": "test row"}
    custom = parse_rails(doc)
    assert custom.oar("Spleen_L") is custom.oars["spleen"]  # a rails key outside the alias table
    limits, notes, flags = oar_max_prescriptions({"spleen": (np.full(2, 20.0), np.ones(2))}, 70.0, rails=custom)
    assert limits == {"spleen:mean_dose": pytest.approx(35.0)} and flags == []


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
