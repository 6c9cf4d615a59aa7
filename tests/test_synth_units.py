"""Unit checks of the generator's building blocks."""

from __future__ import annotations

import numpy as np
import pytest

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import RSI_GENES, rsi_score
from radiogenomics.synthetic import SynthParameters, generate_cohort, genomics, imaging
from radiogenomics.synthetic import anatomy as anat
from radiogenomics.synthetic.model import draw_centres, draw_patient, patient_id_for


@pytest.mark.parametrize("grid", [16, 24, 32, 64, 96])
def test_geometry_keeps_the_field_of_view(grid: int) -> None:
    geo = anat.make_geometry(grid, (10.0, -5.0, 3.0))
    fov = np.array(geo.spacing) * grid
    assert fov == pytest.approx([128.0, 128.0, 160.0])
    centre = np.array(geo.origin) + (grid - 1) / 2 * np.array(geo.spacing)
    assert centre == pytest.approx([10.0, -5.0, 3.0], abs=1e-3)


@pytest.mark.parametrize("grid", [16, 20, 64])
def test_every_roi_is_non_empty_even_on_coarse_grids(grid: int) -> None:
    params = SynthParameters()
    rng = np.random.default_rng(3)
    centres = draw_centres(rng, params)
    for i in range(6):
        patient = draw_patient(rng, i, 6, centres, params)
        anatomy = anat.build_anatomy(rng, anat.make_geometry(grid, (0.0, 0.0, 0.0)), patient)
        present = set(np.unique(anatomy.labels).tolist())
        assert {1, 2, 3, 4} <= present, (grid, i, present)
        gtv = anatomy.labels == 1
        assert not (gtv & (anatomy.tissue == anat.AIR)).any()
        # the cord never overlaps the tumour and stays far from it
        assert anatomy.cord_distance_mm[gtv].min() > 5.0


def test_rsi_gene_profile_hits_the_target() -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    targets = np.linspace(0.1, 0.75, 14)
    profiles = np.array([genomics.rsi_gene_profile(rng, t) for t in targets])
    frame = pd.DataFrame(profiles, columns=list(RSI_GENES), index=[f"P{i}" for i in range(len(targets))])
    got = rsi_score(frame).to_numpy()
    assert np.abs(got - targets).max() < 0.02
    assert ((profiles > 4) & (profiles < 14)).all()  # realistic log2 range


def test_fmiso_tmr_decreases_with_po2() -> None:
    po2 = np.array([0.0, 1.0, 3.0, 10.0, 40.0, 100.0])
    tmr = imaging.fmiso_tmr(po2, 3.5, 3.0)
    assert tmr[0] == pytest.approx(3.5) and tmr[2] == pytest.approx(2.25)
    assert np.all(np.diff(tmr) < 0) and tmr[-1] > 1.0


def test_quantise_is_exact_in_binary() -> None:
    values = imaging.quantise(np.array([1.23456, 70.0]), 1.0 / 256.0)
    assert values.dtype == np.float32
    assert values[1] == 70.0 and abs(values[0] - 1.23456) <= 1 / 512


def test_patient_ids() -> None:
    assert patient_id_for(0, 200) == "SYN0001"
    assert patient_id_for(12344, 20000) == "SYN12345"


@pytest.mark.parametrize("kwargs", [dict(n_patients=0, seed=0), dict(n_patients=2, seed=-1),
                                    dict(n_patients=2, seed=0, grid_size=12), dict(n_patients=2, seed=0, workers=0),
                                    dict(n_patients=2.5, seed=0), dict(n_patients=True, seed=0)])
def test_generate_cohort_rejects_bad_arguments(tmp_path, kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError):
        generate_cohort(tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


def test_progress_is_reported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calls: list[tuple[int, int]] = []
    out = generate_cohort(tmp_path / "c", n_patients=3, seed=1, grid_size=16,
                          progress=lambda d, t: calls.append((d, t)))
    assert out == tmp_path / "c"
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
