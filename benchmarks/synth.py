"""Benchmark: time `generate_cohort` for 200 patients at 64^3 voxels with 2 workers (target < 120 s).

Usage: .venv/bin/python benchmarks/synth.py [--patients 200] [--grid-size 64] [--workers 2] [--keep DIR]
Prints the wall time in seconds and the throughput in patients per minute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from radiogenomics.synthetic import generate_cohort

TARGET_SECONDS = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--grid-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="write the cohort here and keep it")
    args = parser.parse_args()

    tmp = None if args.keep else tempfile.mkdtemp(prefix="synth-bench-")
    out = args.keep if args.keep else Path(tmp) / "cohort"  # type: ignore[arg-type]
    try:
        start = time.perf_counter()
        generate_cohort(out, n_patients=args.patients, seed=args.seed, grid_size=args.grid_size,
                        workers=args.workers, overwrite=True)
        seconds = time.perf_counter() - start
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    rate = args.patients / seconds * 60.0
    verdict = "PASS" if seconds < TARGET_SECONDS else "FAIL"
    print(f"generate_cohort: {args.patients} patients, {args.grid_size}^3 voxels, {args.workers} workers "
          f"(cpu count {os.cpu_count()}): {seconds:.1f} s, {rate:.0f} patients/min "
          f"[{verdict}: target < {TARGET_SECONDS:.0f} s for 200 patients at 64^3 on 2 cores]")


if __name__ == "__main__":
    main()
