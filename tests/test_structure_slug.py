"""Feature columns are keyed by the structure's role in any case/spacing (contract section 1): ``SpinalCord``,
``spinal_cord`` and ``Spinal Cord`` are one organ and give the same ``ct.spinal_cord.*`` / ``dose.spinal_cord.*``
columns, so that a cohort spelling roles the TG-263 way meets a model trained on snake-case roles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_features_helpers import write_fast_params

from radiogenomics.errors import InputError
from radiogenomics.features.dosimetric import dvh_table_features
from radiogenomics.features.naming import dose_column, radiomics_column, structure_slug


@pytest.mark.parametrize(("spellings", "key"), [
    (("SpinalCord", "spinal_cord", "Spinal Cord", "SPINAL_CORD", "spinal cord"), "spinal_cord"),
    (("Parotid_L", "parotid_l", "Parotid L", "ParotidL", "PAROTID_L"), "parotid_l"),
    (("Brainstem", "BrainStem", "brainstem", "BRAINSTEM"), "brainstem"),
    (("pharyngeal_constrictors",), "pharyngeal_constrictors"),
    (("OpticChiasm", "optic_chiasm", "Optic Chiasm"), "optic_chiasm"),
    (("GTV", "gtv"), "gtv"),
    (("PTV70", "ptv70"), "ptv70"),
    (("Heart", "heart"), "heart"),
])
def test_every_spelling_of_a_role_gives_one_key(spellings: tuple[str, ...], key: str) -> None:
    assert {structure_slug(s) for s in spellings} == {key}
    assert {radiomics_column("CT", s, "original_firstorder_Mean") for s in spellings} == {
        f"ct.{key}.original_firstorder_Mean"}
    assert {dose_column(s, "mean_gy") for s in spellings} == {f"dose.{key}.mean_gy"}


def test_names_the_table_does_not_know_keep_their_slug() -> None:
    """Aliases and unknown names are not case/spacing variants of a TG-263 name: their slug, as before."""
    assert structure_slug("Lt Parotid") == "lt_parotid"
    assert structure_slug("MyStructure") == "mystructure"
    assert structure_slug("Boost Region 2") == "boost_region_2"


def _dvh(structures: list[str]) -> pd.DataFrame:
    rows = [{"patient_id": "P1", "structure": s, "dose_gy": d, "volume_cc": 1.0}
            for s in structures for d in (10.0, 20.0, 30.0)]
    return pd.DataFrame(rows)


def test_dvh_table_keys_organs_not_spellings() -> None:
    tg263 = dvh_table_features(_dvh(["SpinalCord", "Parotid L"]))
    snake = dvh_table_features(_dvh(["spinal_cord", "parotid_l"]))
    assert list(tg263.columns) == list(snake.columns)
    assert "dose.spinal_cord.mean_gy" in tg263.columns and "dose.parotid_l.mean_gy" in tg263.columns
    with pytest.raises(InputError, match="same organ"):
        dvh_table_features(_dvh(["SpinalCord", "spinal_cord"]))


def test_extract_gives_the_same_columns_for_tg263_roles(tmp_path: Path) -> None:
    """A synthetic cohort and its copy with images.csv roles spelt the TG-263 way extract to the same table."""
    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.features.schema import read_feature_table
    from radiogenomics.synthetic import generate_cohort

    plain = generate_cohort(tmp_path / "plain", n_patients=2, seed=3, grid_size=16, overwrite=True)
    tg263 = tmp_path / "tg263"
    shutil.copytree(plain, tg263)
    images = pd.read_csv(tg263 / "images.csv", dtype=str, keep_default_na=False)
    images["roi"] = images["roi"].replace({"spinal_cord": "SpinalCord", "parotid_l": "Parotid_L",
                                           "parotid_r": "Parotid R"})
    assert (images["roi"] == "SpinalCord").any()
    images.to_csv(tg263 / "images.csv", index=False)
    params = write_fast_params(tmp_path / "fast.yaml")
    tables = []
    for root in (plain, tg263):
        out = tmp_path / f"{root.name}.parquet"
        extract(root, out, ExtractOptions(workers=1, cache_dir=tmp_path / f"cache_{root.name}", params=params))
        tables.append(read_feature_table(out))
    assert any(c.startswith("ct.spinal_cord.") for c in tables[1].columns)
    pd.testing.assert_frame_equal(tables[0], tables[1])
