"""Command-line options and cohort/output folders shared by the notebooks."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

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
