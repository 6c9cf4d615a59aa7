"""The Lazzeroni-style table of a plans folder: standard uniform vs personalised (painted) plans per patient.

    radiogenomics demo --out demo                      # plans the held-out patients into demo/plans
    python examples/plan_cohort.py demo/plans [--csv table.csv]

Prints, per patient, the planned TCP of the site's standard uniform plan and of the personalised plan (with its
range over the RSI interval), NTCP per endpoint for both, whether every hard rail is met, and the seconds per
plan; then the cohort figures Lazzeroni et al. (J Nucl Med 2026) report: the share of patients with planned TCP
>= 0.9 and every hard rail met, and the median TCP of both plans. Every number comes from the folder's
``plan_evaluation.json`` files (via ``summary.csv``); see docs/planning.md for what they mean and how far the
comparison with Lazzeroni's figures carries (synthetic cohort, photon IMRT). Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

#: Lazzeroni et al., J Nucl Med 2026: painted plans reached TCP > 90 % in all cases; HNSCC control projected from
#: about 60 % (standard) to about 90 % (personalised).
LAZZERONI = {"share_tcp_ge_0_9": 1.0, "control_standard": 0.60, "control_personalised": 0.90}


def table(plans: Path) -> pd.DataFrame:
    """The per-patient table (summary.csv written by `radiogenomics plan`)."""
    from radiogenomics.planning.run import SUMMARY_FILE

    path = plans / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give the --out folder of `radiogenomics plan`")
    return pd.read_csv(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plans", type=Path, help="the --out folder of `radiogenomics plan`")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    args = parser.parse_args(argv)
    try:
        frame = table(args.plans)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from radiogenomics.planning.run import share_controlled

    ntcp = [c for c in frame.columns if c.startswith("ntcp_") and not c.endswith("_uniform")]
    shown = frame[["patient_id", "regimen", "painting", "tcp_uniform_reference", "tcp_planned", "tcp_planned_low",
                   "tcp_planned_high", *[c for n in ntcp for c in (f"{n}_uniform", n) if c in frame],
                   "hard_rails_met", "converged", "seconds"]]
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.precision", 3):
        print(shown.to_string(index=False))
    share = share_controlled(frame)
    tcp_u = pd.to_numeric(frame["tcp_uniform_reference"], errors="coerce")
    tcp_p = pd.to_numeric(frame["tcp_planned"], errors="coerce")
    print(f"\n{len(frame)} patient(s): TCP >= 0.9 with every hard rail met: "
          f"{'-' if share is None else f'{100 * share:.0f} %'} (Lazzeroni et al. 2026: "
          f"{100 * LAZZERONI['share_tcp_ge_0_9']:.0f} %)")
    print(f"mean planned TCP: standard uniform {tcp_u.mean():.2f} -> personalised {tcp_p.mean():.2f} (Lazzeroni et al. "
          f"2026: control about {LAZZERONI['control_standard']:.0%} -> {LAZZERONI['control_personalised']:.0%}); "
          f"hard rails met in {int(frame['hard_rails_met'].sum())} of {len(frame)}; "
          f"median {frame['seconds'].median():.0f} s per patient (both plans)")
    if args.csv is not None:
        shown.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
