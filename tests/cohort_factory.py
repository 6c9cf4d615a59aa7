"""Build small cohort folders by hand (independently of the synthetic generator) for the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import SimpleITK as sitk

RSI_GENES = ("AR", "JUN", "STAT1", "PRKCB", "RELA", "ABL1", "SUMO1", "CDK1", "HDAC1", "IRF1")
SIZE = (20, 18, 12)  # x, y, z: deliberately not square
SPACING = (1.5, 1.5, 3.0)


def make_image(values: np.ndarray | None = None, origin: tuple[float, float, float] = (-15.0, -13.5, -18.0),
               spacing: tuple[float, float, float] = SPACING, pixel=np.float32) -> sitk.Image:
    if values is None:
        rng = np.random.default_rng(0)
        values = rng.normal(40.0, 10.0, size=SIZE[::-1])
    image = sitk.GetImageFromArray(np.asarray(values).astype(pixel))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def make_labels() -> np.ndarray:
    """Label map (z, y, x): 1 = GTV (a box), 2 = parotid_l (another box)."""
    labels = np.zeros(SIZE[::-1], dtype=np.uint8)
    labels[3:9, 5:12, 4:11] = 1
    labels[4:8, 2:6, 13:18] = 2
    return labels


def write_good_cohort(root: Path) -> Path:
    """Two patients, CT + DOSE as NIfTI/NRRD/MHA, label maps, expression with RSI genes, a DVH table."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cohort.yaml").write_text("name: handmade\nformat_version: 1\n")
    (root / "patients.csv").write_text(textwrap.dedent("""\
        patient_id,site,center,age_years,sex,hpv,t_stage,total_dose_gy,n_fractions,lc_months,lc_event,tox_xerostomia,tox_dysphagia,smoker
        HN-001,head_neck,A,61,M,pos,T2,70,35,24.5,0,2,1,yes
        HN-002,head_neck,B,55.5,F,neg,T3,66,33,11,1,,0,no
        """))
    for pid, fmt in (("HN-001", ".nii.gz"), ("HN-002", ".nrrd")):
        folder = root / "images" / pid
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(make_image(), str(folder / f"ct{fmt}"))
        sitk.WriteImage(make_image(make_labels(), pixel=np.uint8), str(folder / f"labels{fmt}"))
        dose = np.full(SIZE[::-1], 20.0)
        dose[make_labels() == 1] = 70.0
        sitk.WriteImage(make_image(dose), str(folder / "dose.mha"))
    (root / "images.csv").write_text(textwrap.dedent("""\
        patient_id,modality,image,mask,roi,label
        HN-001,CT,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,GTV,1
        HN-001,CT,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,parotid_l,2
        HN-001,DOSE,images/HN-001/dose.mha,,,
        HN-002,CT,images/HN-002/ct.nrrd,images/HN-002/labels.nrrd,GTV,
        HN-002,DOSE,images/HN-002/dose.mha,,,
        """))
    genes = ",".join((*RSI_GENES, "CA9", "VEGFA"))
    rng = np.random.default_rng(1)
    rows = [",".join([pid, *(f"{v:.3f}" for v in rng.uniform(4, 12, size=12))]) for pid in ("HN-001", "HN-002")]
    (root / "expression.csv").write_text("patient_id," + genes + "\n" + "\n".join(rows) + "\n")
    (root / "dvh.csv").write_text(textwrap.dedent("""\
        patient_id,structure,dose_gy,volume_cc
        HN-001,parotid_l,10,5.5
        HN-001,parotid_l,30,12.0
        HN-002,parotid_l,25,8.0
        """))
    return root
