"""Benchmark: TCP-optimal dose painting, our structured solver vs a generic scipy.optimize.minimize baseline.

Problem (same for both): least integral dose whose Poisson TCP reaches 95 %, with beta > 0 and hypoxia,
voxel dose in [0, max_voxel_dose_gy of the head & neck rails = 84 Gy]. A 100 cc GTV with 1e9 clonogens
whose density varies log-uniformly over two decades (FDG-like), pO2 log-normal (median 30 mmHg, sigma 0.5),
alpha 0.3 /Gy, beta 0.03 /Gy^2, 30 fractions.

The baseline is SLSQP (the scipy method for smooth nonlinear constraints with bounds) given exact gradients;
it only finishes at small sizes (dense quasi-Newton), so the ratio is taken there, and our solver alone is
timed up to 10^6 voxels (target: < 1 s on 2 cores).

Run:  python benchmarks/radiobiology.py [--sizes 1000 10000 100000 1000000] [--baseline-sizes 250 500 1000]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
from scipy.optimize import minimize

from radiogenomics.radiobiology import load_rails, tcp_optimal_painting, tcp_poisson
from radiogenomics.radiobiology.tcp import effective_lq

ALPHA, BETA, N_FX, TARGET = 0.3, 0.03, 30, 0.95
TOTAL_CLONOGENS = 1e9


def problem(n_voxels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 100 cc GTV at 1e7 clonogens/cc (1e9 in all) on ``n_voxels`` voxels: finer grids split the same
    tumour, so every size has the same, feasible, clinical problem."""
    rng = np.random.default_rng(seed)
    weights = 10 ** rng.uniform(0.0, 2.0, n_voxels)  # density varies over two decades
    clonogens = TOTAL_CLONOGENS * weights / weights.sum()
    po2 = np.exp(rng.normal(math.log(30.0), 0.5, n_voxels))
    return clonogens, po2


def ours(clonogens: np.ndarray, po2: np.ndarray, max_dose: float) -> tuple[float, np.ndarray, float]:
    t0 = time.perf_counter()
    res = tcp_optimal_painting(clonogens, ALPHA, BETA, N_FX, po2_mmhg=po2, max_dose_gy=max_dose,
                               target_tcp=TARGET)
    return time.perf_counter() - t0, res.dose_gy, res.tcp


def baseline(clonogens: np.ndarray, po2: np.ndarray, max_dose: float) -> tuple[float, np.ndarray, bool]:
    a, b = effective_lq(ALPHA, BETA, po2)
    q = b / N_FX
    ln_n = np.log(clonogens)
    ln_l = math.log(-math.log(TARGET))

    def cons(d: np.ndarray) -> float:
        return ln_l - float(np.log(np.sum(np.exp(ln_n - d * (a + q * d)))))

    def cons_jac(d: np.ndarray) -> np.ndarray:
        w = np.exp(ln_n - d * (a + q * d))
        return w * (a + 2 * q * d) / w.sum()

    t0 = time.perf_counter()
    res = minimize(lambda d: float(d.sum()), np.full(clonogens.size, 0.9 * max_dose),
                   jac=lambda d: np.ones_like(d), method="SLSQP", bounds=[(0.0, max_dose)] * clonogens.size,
                   constraints=[{"type": "ineq", "fun": cons, "jac": cons_jac}],
                   options={"maxiter": 1000, "ftol": 1e-10})
    return time.perf_counter() - t0, np.asarray(res.x), bool(res.success)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--baseline-sizes", type=int, nargs="+", default=[250, 500, 1_000, 2_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    max_dose = load_rails().site("head_neck").max_voxel_dose_gy
    print(f"CPU cores available: {os.cpu_count()}; max voxel dose {max_dose} Gy; target TCP {TARGET}")

    print("\n== ours vs scipy.optimize.minimize(SLSQP), same problem ==")
    print(f"{'voxels':>9} {'ours s':>9} {'SLSQP s':>9} {'ratio':>8} {'ours ID':>12} {'SLSQP ID':>12} "
          f"{'ours TCP':>9} {'SLSQP TCP':>9}")
    for n in args.baseline_sizes:
        clon, po2 = problem(n)
        t_ours = min(ours(clon, po2, max_dose)[0] for _ in range(args.repeat))
        _, d_ours, tcp_ours = ours(clon, po2, max_dose)
        t_base, d_base, ok = baseline(clon, po2, max_dose)
        tcp_base = float(tcp_poisson(d_base, clon, ALPHA, BETA, N_FX, po2_mmhg=po2))
        print(f"{n:>9} {t_ours:>9.4f} {t_base:>9.3f} {t_base / t_ours:>8.0f} {d_ours.sum():>12.3f} "
              f"{d_base.sum():>12.3f} {tcp_ours:>9.6f} {tcp_base:>9.6f}{'' if ok else '  (SLSQP failed)'}")

    print("\n== ours alone ==")
    print(f"{'voxels':>9} {'best s':>9} {'median s':>9} {'mean Gy':>8} {'max Gy':>8} {'TCP':>10}")
    for n in args.sizes:
        clon, po2 = problem(n)
        times = []
        for _ in range(args.repeat):
            t, dose, tcp = ours(clon, po2, max_dose)
            times.append(t)
        print(f"{n:>9} {min(times):>9.3f} {float(np.median(times)):>9.3f} {dose.mean():>8.2f} "
              f"{dose.max():>8.2f} {tcp:>10.8f}")
    grid_case(args.repeat, max_dose)


def sphere_gtv(grid: int = 130, radius: float = 62.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A spherical GTV of about 10^6 voxels inside a grid^3 volume (clonogens 0 and pO2 40 mmHg outside)."""
    idx = np.indices((grid, grid, grid)) - (grid - 1) / 2.0
    mask = (idx**2).sum(axis=0) <= radius**2
    clon_v, po2_v = problem(int(mask.sum()))
    clonogens = np.zeros(mask.shape)
    clonogens[mask] = clon_v
    po2 = np.full(mask.shape, 40.0)
    po2[mask] = po2_v
    return clonogens, po2, mask


def grid_case(repeat: int, max_dose: float) -> None:
    clon, po2, mask = sphere_gtv()
    print(f"\n== ours on a 3-D grid: {mask.size} voxels, spherical GTV mask of {int(mask.sum())} voxels ==")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = tcp_optimal_painting(clon, ALPHA, BETA, N_FX, po2_mmhg=po2, max_dose_gy=max_dose, mask=mask,
                                   target_tcp=TARGET)
        times.append(time.perf_counter() - t0)
    print(f"first call {times[0]:.3f} s, best {min(times):.3f} s, median {float(np.median(times)):.3f} s; "
          f"TCP {res.tcp:.8f}, mean {res.mean_dose_gy:.2f} Gy, {res.n_at_max} voxels at the max, "
          f"{res.outer_iterations} outer / {res.inner_iterations} inner iterations")


if __name__ == "__main__":
    main()
