"""tests/records_compare.py: floats to a stated tolerance, everything else exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from records_compare import assert_records_close

RECORD = {"patient_id": "P1", "input_sha256": "ab" * 32, "flags": ["missing_imaging"], "n_fractions": 35,
          "rsi": 0.41, "toxicity": {"xerostomia_grade_ge2": 0.5764600267152628}, "lower": math.nan,
          "dose": None, "fast": True, "created_at": "2026-01-01T00:00:00+00:00"}


def test_last_bit_differences_pass() -> None:
    other = {**RECORD, "toxicity": {"xerostomia_grade_ge2": 0.5764600267152629}, "rsi": 0.41 * (1 + 1e-12),
             "created_at": "2026-01-02T00:00:00+00:00", "n_fractions": 35.0}
    assert_records_close(other, RECORD)
    assert_records_close([other, other], [RECORD, RECORD])
    assert_records_close({"x": np.array([1.0, 2.0 + 1e-15]), "y": np.float32(0.5)}, {"x": [1.0, 2.0], "y": 0.5})


@pytest.mark.parametrize("change", [
    {"rsi": 0.41 * (1 + 1e-8)},                     # a real difference in a figure
    {"toxicity": {"xerostomia_grade_ge2": 0.58}},   # nested
    {"lower": 0.1},                                 # NaN is not a number
    {"patient_id": "P2"},                           # identifiers, hashes, flags: exactly
    {"input_sha256": "ab" * 31 + "ac"},
    {"flags": []},
    {"n_fractions": 36},                            # integers: exactly
    {"dose": 0.0},                                  # None is not 0
    {"fast": 1},                                    # a boolean is not a number
    {"extra": 1.0},                                 # keys
])
def test_real_differences_fail(change: dict) -> None:
    with pytest.raises(AssertionError):
        assert_records_close({**RECORD, **change}, RECORD)


def test_ignored_keys_and_stated_tolerance() -> None:
    with pytest.raises(AssertionError, match="created_at"):
        assert_records_close({**RECORD, "created_at": "x"}, RECORD, ignore=())
    assert_records_close({"a": 1.0 + 1e-6}, {"a": 1.0}, rel=1e-5)
    with pytest.raises(AssertionError, match="rel=1e-12"):
        assert_records_close({"a": 1.0 + 1e-10}, {"a": 1.0}, rel=1e-12, abs_tol=0.0)
