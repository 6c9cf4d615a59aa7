"""Helpers shared by the feature-pipeline tests (imported by them; defines no tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

FAST_PARAMS = """\
imageType:
  Original: {}
featureClass:
  shape: [VoxelVolume, Sphericity]
  firstorder: [Mean, Entropy, Maximum]
  glcm: [Contrast]
setting:
  binWidth: 25
  label: 1
"""


def subset_cohort(src: Path, dst: Path, n_patients: int) -> list[str]:
    """Copy the first ``n_patients`` of a cohort (tables filtered, image files copied) to ``dst``."""
    patients = pd.read_csv(src / "patients.csv", dtype=str, keep_default_na=False)
    keep = patients["patient_id"].tolist()[:n_patients]
    dst.mkdir(parents=True)
    patients[patients["patient_id"].isin(keep)].to_csv(dst / "patients.csv", index=False)
    for name in ("images.csv", "expression.csv", "dvh.csv"):
        if (src / name).exists():
            table = pd.read_csv(src / name, dtype=str, keep_default_na=False)
            table[table["patient_id"].isin(keep)].to_csv(dst / name, index=False)
    for pid in keep:
        shutil.copytree(src / "images" / pid, dst / "images" / pid)
    return keep


def write_fast_params(path: Path) -> Path:
    path.write_text(FAST_PARAMS)
    return path


def test_delivered_columns_are_not_clinical_features() -> None:
    """What was delivered before a mid-treatment timepoint is known only during the course (contract section 8)."""
    import pandas as pd

    from radiogenomics.features.fusion import clinical_frame

    patients = pd.DataFrame({"patient_id": ["P1"], "age_years": [61], "delivered_n_fractions": [10],
                             "delivered_dose_gy": [20.0]})
    assert list(clinical_frame(patients).columns) == ["clinical.age_years"]
