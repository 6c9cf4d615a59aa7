"""objectives.json (radiogenomics-objectives/1): hand-checked numbers, rails never looser, schema, tissue table."""

from __future__ import annotations

import copy
import math
from typing import Any

import jsonschema
import pytest

from radiogenomics.errors import InputError
from radiogenomics.planning import build_objectives, validate_objectives
from radiogenomics.planning.objectives import objectives_schema, scaled_limit_gy
from radiogenomics.radiobiology import lkb_ntcp, load_rails, ntcp_parameters
from radiogenomics.radiobiology.structures import load_structure_aliases
from radiogenomics.radiobiology.tissues import load_tissues, parse_tissues

#: The contract's example (section 7): alpha 0.31, beta 0.05, 35 x 2 Gy = 70 Gy.
CONTRACT = {"patient_id": "P1", "model_name": "radiogenomics-prescriber", "model_version": "3",
            "model_uri": "models:/radiogenomics-prescriber/3", "alpha_per_gy": 0.31, "beta_per_gy2": 0.05,
            "alpha_beta_gy": 6.2, "recommended_total_dose_gy": 70.0, "recommended_n_fractions": 35.0,
            "recommended_dose_per_fraction_gy": 2.0, "flags": [], "input_sha256": "ab" * 32}


def record(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(CONTRACT), **changes}


def structure(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in doc["structures"] if s["name"] == name)


def objective(entry: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(o for o in entry["objectives"] if o["type"] == kind)


def test_target_objectives_by_hand() -> None:
    doc = build_objectives(record(), site="head_neck", oars=["SpinalCord"])
    validate_objectives(doc)
    assert (doc["format"], doc["patient_id"], doc["n_fractions"], doc["dose_per_fraction_gy"]) == \
        ("radiogenomics-objectives/1", "P1", 35, 2.0)
    assert (doc["model_uri"], doc["model_version"], doc["input_sha256"]) == \
        ("models:/radiogenomics-prescriber/3", "3", "ab" * 32)
    gtv = doc["structures"][0]
    assert (gtv["name"], gtv["role"], gtv["alpha_per_gy"], gtv["beta_per_gy2"]) == ("GTV", "target", 0.31, 0.05)
    assert objective(gtv, "target_effect")["effect_per_fraction"] == pytest.approx(0.31 * 2 + 0.05 * 4)  # 0.82
    coverage = objective(gtv, "min_dvh")
    assert (coverage["dose_gy"], coverage["volume_pct"]) == (pytest.approx(66.5), 95.0)  # D95 >= 95 % of 70 Gy
    assert objective(gtv, "max_dose")["dose_gy"] == pytest.approx(74.9)  # 107 %, below the 84 Gy voxel rail
    cord = structure(doc, "SpinalCord")
    assert (cord["role"], cord["alpha_beta_gy"], cord["alpha_per_gy"], cord["beta_per_gy2"]) == ("oar", 2.0, 0.1, 0.05)
    assert cord["objectives"] == [{"type": "max_dose", "dose_gy": 50.0, "priority": 800.0, "rail_dose_gy": 50.0,
                                   "source": load_rails().oars["spinal_cord"].source}]


def test_hypofractionation_tightens_oar_limits_by_hand() -> None:
    # 60 Gy in 20 x 3 Gy (lung rails). Cord: 50 Gy in 2 Gy fractions has BED2 = 50 (1 + 2/2) = 100 Gy; in 20
    # fractions D^2/(20*2) + D = 100 -> D = 20 (sqrt(11) - 1) = 46.332 Gy.
    doc = build_objectives(record(recommended_total_dose_gy=60.0, recommended_n_fractions=20.0,
                                  recommended_dose_per_fraction_gy=3.0), site="lung", oars=["cord", "Lungs"])
    gtv = doc["structures"][0]
    assert objective(gtv, "target_effect")["effect_per_fraction"] == pytest.approx(0.31 * 3 + 0.05 * 9)  # 1.38
    assert objective(structure(doc, "cord"), "max_dose")["dose_gy"] == pytest.approx(20 * (math.sqrt(11) - 1))
    assert scaled_limit_gy(50.0, 20, 2.0) == pytest.approx(46.3325, abs=1e-4)
    # lung mean 20 Gy at alpha/beta 3 in 20 fractions is 1 Gy per fraction: the isoeffective total (BED 33.33 Gy:
    # D^2/60 + D = 33.33 -> D = 30 (sqrt(1 + 4*33.33/60) - 1) = 23.85 Gy) would be looser, so the rail stays
    lungs = structure(doc, "Lungs")
    assert scaled_limit_gy(20.0, 20, 3.0) == 20.0 < 30 * (math.sqrt(1 + 4 * 100 / 3 / 60) - 1)
    assert objective(lungs, "mean_dose")["dose_gy"] == 20.0
    # conventional or smaller fractions never loosen a rail: 40 x 1.9 Gy keeps 50 Gy, not the isoeffective 51.7
    assert scaled_limit_gy(50.0, 40, 2.0) == 50.0


@pytest.mark.parametrize("n_fractions", [5, 15, 30, 35, 44])
@pytest.mark.parametrize("site", ["head_neck", "lung", "breast", "prostate", "other"])
def test_no_oar_objective_is_looser_than_the_rails(site: str, n_fractions: int) -> None:
    rails = load_rails()
    rec = record(recommended_n_fractions=float(n_fractions), recommended_dose_per_fraction_gy=2.0,
                 recommended_total_dose_gy=2.0 * n_fractions)
    doc = build_objectives(rec, site=site)
    validate_objectives(doc)
    oars = [s for s in doc["structures"] if s["role"] == "oar"]
    assert [s["name"] for s in oars] == load_tissues().site_oars[site]
    for entry in oars:
        limit = rails.oar(entry["name"])
        kinds = {o["type"]: o for o in entry["objectives"]}
        if limit is None:
            assert kinds == {} and entry["notes"], entry
            continue
        expected = {kind for kind, value in (("max_dose", limit.max_dose_gy), ("mean_dose", limit.max_mean_dose_gy),
                                             ("geud", limit.max_ntcp)) if value is not None}
        assert set(kinds) == expected, entry["name"]
        if limit.max_dose_gy is not None:
            assert kinds["max_dose"]["dose_gy"] <= limit.max_dose_gy
        if limit.max_mean_dose_gy is not None:
            assert kinds["mean_dose"]["dose_gy"] <= limit.max_mean_dose_gy
        if limit.max_ntcp is not None:
            p = ntcp_parameters(str(limit.endpoint))
            geud = kinds["geud"]
            assert geud["a"] == pytest.approx(1 / p.n)
            assert float(lkb_ntcp(geud["dose_gy"], p.td50_gy, p.m)) <= limit.max_ntcp + 1e-9


def test_oar_without_a_rail_limit_is_listed_with_alpha_beta_and_a_note() -> None:
    doc = build_objectives(record(), oars=["pharyngeal constrictors", "Parotid_L"])
    constrictors = structure(doc, "pharyngeal constrictors")
    assert constrictors["tg263_name"] == "Musc_Constrict" and constrictors["objectives"] == []
    assert constrictors["alpha_beta_gy"] == 3.0 and "no limit in the safety rails" in constrictors["notes"][0]
    parotid = structure(doc, "Parotid_L")
    assert {o["type"] for o in parotid["objectives"]} == {"mean_dose", "geud"}
    assert objective(parotid, "mean_dose")["dose_gy"] == 25.0
    # LKB parotid TD50 39.9 Gy, m 0.40: gEUD at NTCP 0.20 = 39.9 (1 + 0.4 Phi^-1(0.2)) = 26.47 Gy
    assert objective(parotid, "geud")["dose_gy"] == pytest.approx(39.9 * (1 + 0.4 * -0.8416212), abs=1e-4)


@pytest.mark.parametrize(("oars", "match"), [(["SpinalCord", "Spleen"], "Spleen"), (["PTV70"], "target volume"),
                                             (["BODY"], "body outline")])
def test_unknown_or_non_oar_names_fail_closed(oars: list[str], match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        build_objectives(record(), oars=oars)
    assert info.value.patient_id == "P1"


def test_bad_records_and_names_are_input_errors() -> None:
    with pytest.raises(InputError, match="recommended_total_dose_gy"):
        build_objectives(record(recommended_total_dose_gy=math.nan, flags=["clipped_max", "clipped_min"]))
    with pytest.raises(InputError, match="not a target volume"):
        build_objectives(record(), target_name="Brainstem")
    with pytest.raises(InputError, match="no rails for site"):
        build_objectives(record(), site="moon")


def test_flags_are_copied_and_objectives_still_written() -> None:
    flags = ["out_of_distribution", "population_fallback", "missing_genomics"]
    doc = build_objectives(record(flags=flags), site="head_neck")
    validate_objectives(doc)
    assert doc["flags"] == flags and any("population_fallback" in n for n in doc["notes"])
    assert objective(doc["structures"][0], "target_effect")["effect_per_fraction"] == pytest.approx(0.82)


def test_the_schema_is_valid_and_rejects_broken_documents() -> None:
    jsonschema.Draft202012Validator.check_schema(objectives_schema())
    good = build_objectives(record(), site="head_neck")
    broken: list[tuple[str, Any]] = [
        ("format", lambda d: d.update(format="radiogenomics-objectives/2")),
        ("input_sha256", lambda d: d.update(input_sha256="xyz")),
        ("n_fractions", lambda d: d.update(n_fractions=0)),
        ("structures", lambda d: d.update(structures=[])),
        ("extra", lambda d: d.update(extra=1)),
        ("flags", lambda d: d.update(flags=["made_up"])),
        ("objectives", lambda d: d["structures"][0]["objectives"].append({"type": "max_dose", "priority": 1.0})),
        ("objectives", lambda d: d["structures"][1]["objectives"][0].update(dose_gy=-1.0)),
        ("role", lambda d: d["structures"][1].update(role="organ")),
        ("repeat", lambda d: d["structures"].append(copy.deepcopy(d["structures"][1]))),
        ("target", lambda d: d["structures"][1].update(role="target")),
    ]
    for what, change in broken:
        doc = copy.deepcopy(good)
        change(doc)
        with pytest.raises(InputError):
            validate_objectives(doc)
            pytest.fail(what)
    validate_objectives(good)


def test_tissue_table_covers_the_alias_table_with_sources() -> None:
    table = load_tissues()
    organs = load_structure_aliases().organs
    assert {table.lookup(name)[1].organ for name in table.rows} == organs
    for name, tissue in table.rows.items():
        assert tissue.source.strip() and tissue.alpha_beta_gy > 0, name
        assert tissue.beta_per_gy2 == pytest.approx(tissue.alpha_per_gy / tissue.alpha_beta_gy)
    assert table.lookup("spinal cord")[0].alpha_beta_gy == 2.0
    assert table.lookup("lt_parotid")[0].name == table.lookup("Parotids")[0].name == "Parotid"
    for site, names in table.site_oars.items():
        for name in names:
            table.lookup(name)  # every default OAR resolves
        load_rails().site(site)


def test_tissue_table_rejects_bad_rows() -> None:
    from importlib import resources

    import yaml

    doc = yaml.safe_load(resources.files("radiogenomics.radiobiology").joinpath("data/tissues.yaml").read_text())
    cases = [("source", lambda d: d["tissues"]["Larynx"].pop("source")),
             ("unknown keys", lambda d: d["tissues"]["Larynx"].update(colour="red")),
             ("TG-263", lambda d: d["tissues"].update(Spleen=dict(d["tissues"]["Larynx"]))),
             ("without a row", lambda d: d["tissues"].pop("Larynx")),
             ("positive", lambda d: d["tissues"]["Larynx"].update(alpha_beta_gy=0))]
    for match, change in cases:
        broken = copy.deepcopy(doc)
        change(broken)
        with pytest.raises(InputError, match=match):
            parse_tissues(broken)
