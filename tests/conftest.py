"""Shared fixtures: small synthetic cohorts generated once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
IBSI_DIR = SHARED_DIR / "data" / "ibsi"


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-patient synthetic cohort on a 32^3 grid (seed 7), written once per session. Treat as read-only."""
    from radiogenomics.synthetic import generate_cohort

    out = tmp_path_factory.mktemp("synth") / "cohort"
    generate_cohort(out, n_patients=12, seed=7, grid_size=32)
    return out


@pytest.fixture(scope="session")
def ibsi_dir() -> Path:
    if not IBSI_DIR.is_dir():
        pytest.fail(f"IBSI phantom not found at {IBSI_DIR}: CI must check out ../shared beside the repo")
    return IBSI_DIR


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The session's 24-patient extracted cohort with fitted RSI and toxicity models
    (``prescriber_factory.Bundle``). Treat as read-only."""
    from prescriber_factory import build_bundle, session_base

    return build_bundle(session_base(tmp_path_factory))


@pytest.fixture(scope="session")
def prescriber(bundle: Any) -> Any:
    """A :class:`~radiogenomics.models.prescriber.Prescriber` of ``bundle``'s models. Treat as read-only."""
    from radiogenomics.models.prescriber import Prescriber

    return Prescriber.from_training(bundle.table, bundle.schema, bundle.radiosensitivity, bundle.toxicity)


@pytest.fixture(scope="module")
def registry(bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The session's prescriber registered once (``serving_factory.MODEL``: radiogenomics-prescriber@champion),
    MLflow pointed at its store for the module; the registry folder."""
    from prescriber_factory import session_base, use_tracking_uri
    from serving_factory import shared_registry, tracking_uri

    folder, _ = shared_registry(bundle, session_base(tmp_path_factory))
    with use_tracking_uri(tracking_uri(folder)):
        yield folder
