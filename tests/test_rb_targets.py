"""Per-patient dose targets: the dose fields of the prescription record."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radiogenomics.radiobiology import (
    dose_for_gard,
    dose_targets,
    lkb_ntcp,
    patient_lq,
    toxicity_at_dose,
)


def test_dose_targets_record() -> None:
    lq = patient_lq(0.45)
    t = dose_targets(lq, site="head_neck", target_gard=33.0, n_fractions=35, dose_per_fraction_gy=2.0)
    assert t.gard == pytest.approx(-35 * math.log(0.45))
    assert t.dose_for_target_gard_gy == pytest.approx(dose_for_gard(0.45, 33.0))
    assert t.recommended_total_dose_gy == pytest.approx(min(max(t.dose_for_target_gard_gy, 60.0), 80.0))
    rec = t.as_record()
    for key in ("alpha_per_gy", "beta_per_gy2", "alpha_beta_gy", "dose_per_fraction_gy", "n_fractions", "gard",
                "target_gard", "dose_for_target_gard_gy", "recommended_total_dose_gy", "toxicity", "flags"):
        assert key in rec


def test_dose_targets_clipping_and_fallback_flags() -> None:
    radioresistant = patient_lq(0.9, fallback_alpha_per_gy=0.05)
    t = dose_targets(radioresistant, site="head_neck", target_gard=60.0)
    assert t.recommended_total_dose_gy == 80.0
    assert t.flags == ["out_of_distribution", "population_fallback", "clipped_max"]
    sensitive = patient_lq(0.1)
    t2 = dose_targets(sensitive, site="head_neck", target_gard=33.0)
    assert t2.dose_for_target_gard_gy < 60.0
    assert t2.recommended_total_dose_gy == 60.0
    assert t2.flags == ["clipped_min"]


def test_toxicity_at_planned_dose() -> None:
    vol = np.ones(3)
    left = (np.array([10.0, 25.0, 40.0]), vol)  # mean 25 Gy at 70 Gy
    right = (np.array([5.0, 15.0, 25.0]), vol)
    tox = toxicity_at_dose({"parotid_l": left, "parotid_r": right}, 70.0, 70.0)
    assert tox["xerostomia"] == pytest.approx(float(lkb_ntcp(25.0, 39.9, 0.4)))
    tox2 = toxicity_at_dose({"parotid_l": left}, 70.0, 56.0)
    assert tox2["xerostomia"] == pytest.approx(float(lkb_ntcp(20.0, 39.9, 0.4)))
    t = dose_targets(patient_lq(0.45), site="head_neck", target_gard=33.0, oar_dvhs={"parotid_l": left},
                     reference_prescription_gy=70.0)
    assert t.toxicity["xerostomia"] == pytest.approx(
        float(lkb_ntcp(25.0 * t.recommended_total_dose_gy / 70.0, 39.9, 0.4)))
