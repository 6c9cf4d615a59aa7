"""Command-line options, cohort/output folders and the synthetic voxel truth shared by the notebooks (and tests)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from radiogenomics.cohort import Cohort, load_cohort
from radiogenomics.synthetic import generate_cohort


def notebook_parser(description: str) -> argparse.ArgumentParser:
    """Options every notebook takes: cohort, output folder, RSI imputation, synthetic fallback cohort."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("--cohort", default=os.environ.get("RADIOGENOMICS_COHORT") or None)
    parser.add_argument("--out", default=os.environ.get("RADIOGENOMICS_NOTEBOOK_OUT") or None)
    parser.add_argument("--rsi-missing", choices=("raise", "median", "mean"), default="median")
    parser.add_argument("--synthetic-patients", type=int, default=120)
    parser.add_argument("--synthetic-grid", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def parse_notebook_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse known options only (Jupyter passes its own arguments to the kernel)."""
    args, _ignored = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args


def cohort_and_output(args: argparse.Namespace, out_prefix: str) -> tuple[Path, Path]:
    """The cohort folder (a synthetic one is generated when none is given) and the output folder."""
    if args.cohort:
        cohort_dir = Path(args.cohort)
    else:
        cohort_dir = Path(tempfile.mkdtemp(prefix="radiogenomics_synth_")) / "cohort"
        print(f"no cohort given: generating a synthetic cohort ({args.synthetic_patients} patients, "
              f"{args.synthetic_grid}^3 voxels, seed {args.seed}) in {cohort_dir}")
        generate_cohort(cohort_dir, n_patients=args.synthetic_patients, seed=args.seed,
                        grid_size=args.synthetic_grid)
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=f"{out_prefix}_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"cohort: {cohort_dir}\noutput: {out_dir}")
    return cohort_dir, out_dir


def load_cohort_with_expression(cohort_dir: Path) -> Cohort:
    """The cohort, which must have expression.csv (RSI and GARD need it)."""
    cohort = load_cohort(cohort_dir)
    if cohort.expression is None:
        raise SystemExit(f"{cohort_dir} has no expression.csv: RSI and GARD cannot be computed.")
    return cohort


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
