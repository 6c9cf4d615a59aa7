"""Seconds and peak memory per plan against grid size and beam count (``radiogenomics plan``'s optimizer step).

    python benchmarks/plan.py [--grids 32,48,64] [--beams 5,7,9] [--max-iter 400] [--work DIR]

One synthetic patient (seed 3) per grid size is generated once; for every (grid, beams) a fresh Python process
plans the patient's objectives (a record of 35 x 2 Gy, alpha 0.3 /Gy, beta 0.03 /Gy^2; the painted map of its PET,
as `radiogenomics handoff` writes it) with the pyRadPlan adapter and then the standard uniform plan on the same
geometry, and prints: the geometry (stf + dij) seconds, the painted and uniform optimisation seconds and iterations,
and the process's peak resident memory (``ru_maxrss``, including pyRadPlan's import). Ratios in the same run:

- every configuration against the first (the smallest grid with the fewest beams): how time and memory scale;
- the uniform reference plan with the dij reused against the painted plan that computed it (the adapter's cache).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RECORD = {"patient_id": "", "alpha_per_gy": 0.3, "beta_per_gy2": 0.03, "recommended_total_dose_gy": 70.0,
          "recommended_n_fractions": 35.0, "recommended_dose_per_fraction_gy": 2.0, "model_uri": "benchmark",
          "model_version": "0", "input_sha256": "0" * 64, "flags": [], "site": "head_neck", "rsi_lower": 0.3,
          "rsi_upper": 0.5}


def one(cohort: Path, beams: int, max_iter: int) -> dict[str, Any]:
    """Plan the cohort's first patient (painted, then uniform on the reused geometry); the figures as a dict."""
    from radiogenomics.cohort.loader import load_cohort
    from radiogenomics.planning.anatomy import load_anatomy
    from radiogenomics.planning.dose_map import load_pet, prescription_map
    from radiogenomics.planning.handoff import patient_structures
    from radiogenomics.planning.objectives import build_objectives
    from radiogenomics.planning.optimizers.base import PlanProblem, PlanSettings, PlanStructure, get_optimizer
    from radiogenomics.planning.run import _structures

    loaded = load_cohort(cohort)
    pid = loaded.patient_ids[0]
    record = {**RECORD, "patient_id": pid}
    pet, _ = load_pet(loaded, pid)
    assert pet is not None
    painted = prescription_map(record, pet, site="head_neck")
    structures = patient_structures(loaded, pid)
    stats = {"file": "map", "min_gy": painted.min_dose_gy, "max_gy": painted.max_dose_gy}
    objectives = build_objectives(record, site="head_neck", structures=structures, dose_map=stats)
    anatomy = load_anatomy(loaded, pid, {s["name"]: s["role"] for s in objectives["structures"]})
    plan_structures = _structures(objectives, anatomy)
    settings = PlanSettings(beams=beams, max_iter=max_iter)
    optimizer = get_optimizer("pyradplan")
    start = time.perf_counter()
    planned = optimizer.optimize(PlanProblem(pid, anatomy.ct, plan_structures, 35, 2.0, settings, painted.dose_gy))
    painted_s = time.perf_counter() - start
    uniform_doc = build_objectives(record, site="head_neck", structures=structures)
    by_name = {s["name"]: s for s in uniform_doc["structures"]}
    uniform_structures = [PlanStructure(s.name, s.role, s.tg263_name, s.mask, s.alpha_per_gy, s.beta_per_gy2,
                                        list(by_name.get(s.name, {}).get("objectives") or []), s.derived)
                          for s in plan_structures]
    start = time.perf_counter()
    uniform = optimizer.optimize(PlanProblem(pid, anatomy.ct, uniform_structures, 35, 2.0, settings))
    uniform_s = time.perf_counter() - start
    return {"grid": list(anatomy.ct.GetSize()), "beams": beams, "beamlets": planned.n_beamlets,
            "geometry_s": planned.details["geometry_seconds"], "painted_s": painted_s,
            "painted_iterations": planned.iterations, "uniform_s": uniform_s,
            "uniform_iterations": uniform.iterations, "uniform_geometry_reused": uniform.details["geometry_reused"],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grids", default="32,48,64")
    parser.add_argument("--beams", default="5,7,9")
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("COHORT", "BEAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(Path(args.one[0]), int(args.one[1]), args.max_iter)))
        return
    from radiogenomics.synthetic import generate_cohort

    work = args.work or Path(tempfile.mkdtemp(prefix="plan-bench-"))
    rows = []
    for grid in (int(g) for g in args.grids.split(",")):
        cohort = work / f"cohort-{grid}"
        if not (cohort / "images.csv").is_file():
            generate_cohort(cohort, n_patients=1, seed=3, grid_size=grid, overwrite=True)
        for beams in (int(b) for b in args.beams.split(",")):
            proc = subprocess.run([sys.executable, __file__, "--one", str(cohort), str(beams), "--max-iter",
                                   str(args.max_iter)], capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"grid {grid:>3}^3 beams {beams}: {r['beamlets']:>5} beamlets, geometry {r['geometry_s']:6.1f} s, "
                  f"painted {r['painted_s']:6.1f} s ({r['painted_iterations']} it), uniform {r['uniform_s']:6.1f} s "
                  f"({r['uniform_iterations']} it, dij reused: {r['uniform_geometry_reused']}), "
                  f"peak {r['peak_mb']:7.0f} MB", flush=True)
    base = rows[0]
    print("\nratios against the first configuration (time of the painted plan incl. geometry; peak memory):")
    for r in rows:
        print(f"  grid {r['grid'][0]:>3} beams {r['beams']}: time x{r['painted_s'] / base['painted_s']:.2f}, "
              f"memory x{r['peak_mb'] / base['peak_mb']:.2f}")
    reuse = [r["painted_s"] / r["uniform_s"] for r in rows if r["uniform_s"] > 0]
    print(f"uniform reference on the reused dij vs the painted plan that built it: {min(reuse):.2f}x to "
          f"{max(reuse):.2f}x faster")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
