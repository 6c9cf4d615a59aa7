"""The TG-263 alias table: structure names -> organs, targets and the body outline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import (
    canonical_structure,
    is_target_structure,
    load_rails,
    load_structure_aliases,
    resolve_structure,
)
from radiogenomics.radiobiology.structures import parse_structure_aliases, words

DATA = Path(__file__).resolve().parents[1] / "radiogenomics/radiobiology/data"

# The TG-263 standard names the issue lists (Mayo et al. IJROBP 2018;100:1057): each is its own canonical name.
TG263 = ["SpinalCord", "Brainstem", "Parotid_L", "Parotid_R", "Glnd_Submand_L", "Glnd_Submand_R", "Esophagus",
         "Larynx", "Bone_Mandible", "OpticNrv_L", "OpticNrv_R", "OpticChiasm", "Cochlea_L", "Cochlea_R", "Lung_L",
         "Lung_R", "Lungs", "Heart", "Rectum", "Bladder", "Liver", "Musc_Constrict", "Brain", "Eye_L", "Eye_R",
         "Lens_L", "Lens_R", "Cavity_Oral", "Parotids", "Kidney_L", "Femur_Head_R", "BrachialPlex_L"]


@pytest.mark.parametrize("name", TG263)
def test_tg263_names_are_canonical(name: str) -> None:
    match = resolve_structure(name)
    assert match is not None and match.kind == "oar"
    assert match.canonical == name
    assert canonical_structure(name.upper()) == name  # case-insensitive
    assert not is_target_structure(name)


@pytest.mark.parametrize(("name", "canonical", "organ", "side"), [
    ("spinal_cord", "SpinalCord", "spinal_cord", None),
    ("cord", "SpinalCord", "spinal_cord", None),
    ("Spinal Cord", "SpinalCord", "spinal_cord", None),
    ("SPINAL-CORD", "SpinalCord", "spinal_cord", None),
    ("brain stem", "Brainstem", "brainstem", None),
    ("BrainStem", "Brainstem", "brainstem", None),
    ("parotid left", "Parotid_L", "parotid", "L"),
    ("L Parotid", "Parotid_L", "parotid", "L"),
    ("lt_parotid", "Parotid_L", "parotid", "L"),
    ("LeftParotid", "Parotid_L", "parotid", "L"),
    ("parotid_r", "Parotid_R", "parotid", "R"),
    ("Parotid Rt", "Parotid_R", "parotid", "R"),
    ("submandibular gland right", "Glnd_Submand_R", "submandibular_gland", "R"),
    ("optic nerve L", "OpticNrv_L", "optic_nerve", "L"),
    ("chiasm", "OpticChiasm", "optic_chiasm", None),
    ("Mandible", "Bone_Mandible", "mandible", None),
    ("oesophagus", "Esophagus", "esophagus", None),
    ("pharyngeal_constrictors", "Musc_Constrict", "pharyngeal_constrictors", None),
    ("oral cavity", "Cavity_Oral", "oral_cavity", None),
    ("Lungs-GTV", "Lungs", "lung", None),
    ("total lung", "Lungs", "lung", None),
    ("right lung", "Lung_R", "lung", "R"),
    ("Pericardium", "Pericardium", "heart", None),
])
def test_common_variants(name: str, canonical: str, organ: str, side: str | None) -> None:
    match = resolve_structure(name)
    assert match is not None and match.kind == "oar"
    assert (match.canonical, match.organ, match.side) == (canonical, organ, side)


@pytest.mark.parametrize(("name", "canonical"), [
    ("GTV", "GTV"), ("gtv", "GTV"), ("GTVp", "GTVp"), ("PTV70", "PTV70"), ("ptv_70", "PTV_70"),
    ("CTV_High", "CTV_High"), ("ITV", "ITV"), ("PTV-56", "PTV-56"), ("ctvn_5412", "CTVn_5412"),
])
def test_targets_are_not_organs(name: str, canonical: str) -> None:
    match = resolve_structure(name)
    assert match is not None and match.kind == "target" and match.organ is None
    assert match.canonical == canonical
    assert is_target_structure(name)


@pytest.mark.parametrize("name", ["BODY", "External", "body", "Outline", "EXT"])
def test_body_outline(name: str) -> None:
    match = resolve_structure(name)
    assert match is not None and match.kind == "external" and match.canonical == "External"
    assert not is_target_structure(name)


@pytest.mark.parametrize("name", ["spleen", "Brainstem_L", "Lungs_R", "parotid_x", "", "   ", "foo_cord"])
def test_unknown_names_match_nothing(name: str) -> None:
    assert resolve_structure(name) is None
    assert canonical_structure(name) is None
    assert not is_target_structure(name)


def test_words() -> None:
    assert words("SpinalCord") == ["spinal", "cord"]
    assert words("Glnd_Submand_L") == ["glnd", "submand", "l"]
    assert words("LParotid") == ["l", "parotid"]
    assert words("optic-nerve.right") == ["optic", "nerve", "right"]


def test_every_rails_organ_is_in_the_alias_table() -> None:
    organs = load_structure_aliases().organs
    for key in load_rails().oars:
        assert key in organs, key


def _doc() -> dict:
    return yaml.safe_load((DATA / "structure_aliases.yaml").read_text())


def test_alias_validation() -> None:
    doc = copy.deepcopy(_doc())
    doc["organs"]["Brainstem"]["aliases"].append("spinal cord")  # one name, two organs
    with pytest.raises(InputError, match="names both"):
        parse_structure_aliases(doc)
    doc = copy.deepcopy(_doc())
    doc["organs"]["Cochlea"]["aliases"].append("cochlear")  # would read "Cochlea_R" as one word
    with pytest.raises(InputError, match="side word"):
        parse_structure_aliases(doc)
    doc = copy.deepcopy(_doc())
    doc["organs"]["Brainstem"]["aliasses"] = ["x"]
    with pytest.raises(InputError, match="unknown keys"):
        parse_structure_aliases(doc)
    doc = copy.deepcopy(_doc())
    del doc["organs"]["Heart"]["organ"]
    with pytest.raises(InputError, match="organ"):
        parse_structure_aliases(doc)
    doc = copy.deepcopy(_doc())
    doc["external"]["aliases"].append("heart")
    with pytest.raises(InputError, match="external"):
        parse_structure_aliases(doc)
    doc = copy.deepcopy(_doc())
    doc["targets"] = []
    with pytest.raises(InputError, match="targets"):
        parse_structure_aliases(doc)


def test_custom_alias_file(tmp_path: Path) -> None:
    doc = _doc()
    doc["organs"]["Spleen"] = {"organ": "spleen", "aliases": ["lien"]}
    path = tmp_path / "aliases.yaml"
    path.write_text(yaml.safe_dump(doc))
    table = load_structure_aliases(path)
    match = table.resolve("LIEN")
    assert match is not None and match.canonical == "Spleen" and match.organ == "spleen"
    with pytest.raises(InputError, match="cannot read"):
        load_structure_aliases(tmp_path / "missing.yaml")
