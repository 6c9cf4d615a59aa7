"""Folders, cohort, feature table and the synthetic voxel truth shared by the notebooks (and their tests).

Every notebook reads its inputs from the environment, so that the same file runs in Jupyter, in CI and with
``jupyter execute``:

* ``RADIOGENOMICS_NOTEBOOK_OUT``: the output folder (default: ``<temp>/radiogenomics-notebooks``, shared by
  the four notebooks so that they can run in order: 01 extracts, 02 trains, 03 analyses, 04 serves);
* ``RADIOGENOMICS_COHORT``: the cohort folder (format v1). Default: ``<out>/cohort``, a synthetic cohort
  (120 patients, 24^3 voxels, seed 0) generated on first use and reused afterwards;
* ``RADIOGENOMICS_FEATURES``: the cohort's feature table. Default: ``<out>/features.parquet``, extracted on
  first use (original-image radiomics only, to keep it quick; ``radiogenomics extract`` gives the full set).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from radiogenomics.cohort import Cohort, load_cohort
from radiogenomics.errors import InputError

ENV_COHORT = "RADIOGENOMICS_COHORT"
ENV_OUT = "RADIOGENOMICS_NOTEBOOK_OUT"
ENV_FEATURES = "RADIOGENOMICS_FEATURES"
#: the synthetic cohort made when no cohort is given
SYNTHETIC = {"n_patients": 120, "grid_size": 24, "seed": 0}


@dataclass(frozen=True)
class Folders:
    """Where a notebook reads its cohort and writes its outputs."""

    cohort: Path
    out: Path
    synthetic: bool  # True: the cohort is the default synthetic one under ``out``

    def describe(self) -> str:
        kind = " (synthetic default)" if self.synthetic else ""
        return f"cohort: {self.cohort}{kind}\noutput: {self.out}"


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (plots show inline); False in a plain interpreter."""
    return "ipykernel" in sys.modules


def notebook_folders(env: Mapping[str, str] | None = None) -> Folders:
    """The output folder (created) and the cohort folder (the synthetic default is generated when missing)."""
    env = os.environ if env is None else env
    out = Path(env.get(ENV_OUT) or Path(tempfile.gettempdir()) / "radiogenomics-notebooks").expanduser()
    out.mkdir(parents=True, exist_ok=True)
    given = env.get(ENV_COHORT)
    if given:
        cohort = Path(given).expanduser()
        if not (cohort / "patients.csv").is_file():
            raise InputError(f"{ENV_COHORT}={given} is not a cohort folder (no patients.csv)", file=str(cohort),
                             fix="point it at a cohort folder in format v1, or unset it for a synthetic cohort")
        return Folders(cohort, out, synthetic=False)
    cohort = out / "cohort"
    on_disk = synthetic_options(cohort)
    if on_disk != SYNTHETIC:
        from radiogenomics.synthetic import generate_cohort

        if on_disk is None and cohort.is_dir() and any(cohort.iterdir()):
            raise InputError(f"{cohort} holds files that were not generated here", file=str(cohort),
                             fix=f"set {ENV_COHORT} to use it as the cohort, or choose another {ENV_OUT}")
        generate_cohort(cohort, n_patients=SYNTHETIC["n_patients"], seed=SYNTHETIC["seed"],
                        grid_size=SYNTHETIC["grid_size"], overwrite=on_disk is not None)
    return Folders(cohort, out, synthetic=True)


def synthetic_options(cohort: Path) -> dict[str, Any] | None:
    """Seed, size and grid of a cohort written by ``radiogenomics.synthetic`` (None when there is none)."""
    meta_path = cohort / "cohort.yaml"
    if not meta_path.is_file():
        return None
    meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
    gen = meta.get("generator") if isinstance(meta, dict) else None
    if not isinstance(gen, dict) or gen.get("module") != "radiogenomics.synthetic":
        return None
    return {"n_patients": gen.get("n_patients"), "grid_size": gen.get("grid_size"), "seed": gen.get("seed")}


def feature_table(folders: Folders, env: Mapping[str, str] | None = None) -> Path:
    """``$RADIOGENOMICS_FEATURES``, else ``<out>/features.parquet`` (extracted, cached, when missing)."""
    env = os.environ if env is None else env
    given = env.get(ENV_FEATURES)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InputError(f"{ENV_FEATURES}={given} does not exist", file=str(path),
                             fix="give the Parquet file of `radiogenomics extract`, or unset it to extract here")
        return path
    path = folders.out / "features.parquet"
    if not path.is_file():
        from radiogenomics.features.pipeline import ExtractOptions, extract

        extract(folders.cohort, path, ExtractOptions(workers=2, filters=("original",), progress=True))
    return path


def load_cohort_with_expression(cohort_dir: Path) -> Cohort:
    """The cohort, which must have expression.csv (RSI and GARD need it)."""
    cohort = load_cohort(cohort_dir)
    if cohort.expression is None:
        raise InputError("the cohort has no expression.csv: RSI and GARD cannot be computed",
                         file=str(cohort_dir / "expression.csv"), fix="add the expression table (format v1)")
    return cohort


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite_or_none(value: object) -> object:
    """NaN/inf -> None, recursively (strict JSON has no NaN)."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Mapping):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def write_json(path: Path, data: Mapping[str, object]) -> Path:
    """``data`` as strict JSON (NaN -> null) at ``path``."""
    path.write_text(json.dumps(_finite_or_none(data), indent=2, default=_json_default, allow_nan=False) + "\n",
                    encoding="utf-8")
    return path


@dataclass(frozen=True)
class VoxelTruth:
    """One synthetic patient's GTV voxels: planned dose, clonogen number and pO2, and the latent LQ parameters."""

    dose_gy: np.ndarray
    clonogens: np.ndarray
    po2_mmhg: np.ndarray
    alpha_per_gy: float
    beta_per_gy2: float
    total_dose_gy: float
    n_fractions: int


def synthetic_voxel_truth(cohort_dir: Path, patient_ids: Collection[str]) -> dict[str, VoxelTruth]:
    """Re-create the GTV voxel maps of a ``radiogenomics.synthetic`` cohort from the seed in ``cohort.yaml``.

    Follows ``radiogenomics.synthetic.generate.simulate_patient`` stream by stream (internal functions of the
    generator; the caller checks the result against ``truth.csv``). Only ``patient_ids`` are returned;
    ``{}`` for a cohort written by anything else.
    """
    meta = yaml.safe_load((cohort_dir / "cohort.yaml").read_text()) or {}
    gen = meta.get("generator") or {}
    if gen.get("module") != "radiogenomics.synthetic":
        return {}
    from radiogenomics.synthetic import anatomy, imaging
    from radiogenomics.synthetic.model import SynthParameters, draw_centres, draw_patient

    seed, n_patients, grid = int(gen["seed"]), int(gen["n_patients"]), int(gen["grid_size"])
    params = SynthParameters()
    cohort_seq, patient_seq = np.random.SeedSequence(seed).spawn(2)
    centres = draw_centres(np.random.default_rng(cohort_seq), params)
    wanted = set(patient_ids)
    maps: dict[str, VoxelTruth] = {}
    for i in range(n_patients):
        seq = np.random.SeedSequence(seed, spawn_key=(*patient_seq.spawn_key, i))
        r_latent, r_anat, r_fields, _img, r_dose, _expr, _out = (np.random.default_rng(s) for s in seq.spawn(7))
        p = draw_patient(r_latent, i, n_patients, centres, params)
        if p.patient_id not in wanted:
            continue
        shift = r_anat.uniform(-5.0, 5.0, 3)
        offset = tuple(float(o + s) for o, s in zip(p.centre.origin_offset_mm, shift, strict=True))
        geometry = anatomy.make_geometry(grid, offset)  # type: ignore[arg-type]
        anat = anatomy.build_anatomy(r_anat, geometry, p, p_unilateral_neck=params.p_unilateral_neck)
        fields = imaging.tumour_fields(r_fields, anat, p, params)
        dose = imaging.plan_dose(r_dose, anat, p, params)
        gtv = anat.labels[anat.gtv_box] == anatomy.LABEL_GTV
        maps[p.patient_id] = VoxelTruth(dose[anat.gtv_box][gtv].astype(np.float64), fields.clonogens,
                                        fields.po2_mmhg, p.alpha_per_gy, p.beta_per_gy2, p.total_dose_gy,
                                        int(p.n_fractions))
    return maps
