"""Wall time and peak memory of `radiogenomics train` with the default config, and how fit time grows with N.

    python benchmarks/train.py [--patients 200 500] [--grid-size 64] [--config TRAIN.yaml] [--work DIR] [--dask]
    python benchmarks/train.py --evaluate OUT/runs/<run id> --features F.parquet --truth COHORT/truth.csv

For each N a synthetic cohort (``radiogenomics.synthetic.generate_cohort``, seed 2026) is generated and its
features extracted (cached; setup, not timed), then ``train`` runs in a fresh process with ``--features``
(a local MLflow store in the work folder). Reported per N: the wall time and peak resident memory of that
process (``os.wait4`` rusage), and the nested-CV time of each task; the last column pair gives the growth
exponent ``b`` of ``time ~ N^b`` between consecutive N (1: linear). Slow: minutes per N on 2 cores.

``--dask`` also trains each N with ``--dask`` on a loopback cluster of two worker processes (one thread each,
``distributed.LocalCluster``, started before and not timed) and prints the wall time local vs Dask and their
ratio, with whether both runs chose the same winners.

``--evaluate`` reads the out-of-fold predictions a training saved (``<run dir>/oof``) and prints the issue's
acceptance numbers: per RSI candidate Spearman with the measured RSI and conformal coverage; Spearman of the
held-out outcome-calibrated alpha with ``truth.csv`` alpha, next to alpha from the measured RSI alone
(``alpha_from_rsi``, no fitting; patients with RSI outside its domain left out, and ``-RSI`` for all); per
toxicity candidate AUC, Brier and calibration slope of the pooled held-out probabilities. truth.csv is read
for this evaluation only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

WORKER_FLAG = "--one"


def run_one(cohort: Path, features: Path, out: Path, config: str | None, result: Path,
            dask_address: str | None = None) -> None:
    """(worker process) one training; writes its wall time and per-task nested-CV times as JSON."""
    import logging

    from radiogenomics.training.run import train

    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    summary = train(cohort, features, config, out, progress=False, dask_address=dask_address)
    tasks: dict[str, float] = {}
    for task in summary.tasks:
        tasks[task.label] = tasks.get(task.label, 0.0) + sum(c.fit_s for c in task.candidates)
    result.write_text(json.dumps({"wall_s": time.monotonic() - started, "tasks": tasks,
                                  "winners": {t.label: t.winner for t in summary.tasks}}))


def prepare(n: int, grid: int, work: Path) -> tuple[Path, Path]:
    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.synthetic import generate_cohort

    cohort, features = work / f"cohort{n}", work / f"features{n}.parquet"
    if not (cohort / "patients.csv").exists():
        generate_cohort(cohort, n_patients=n, seed=2026, grid_size=grid, overwrite=True)
    if not features.exists():
        extract(cohort, features, ExtractOptions(workers=0))
    return cohort, features


def measure(n: int, cohort: Path, features: Path, work: Path, config: str | None,
            dask_address: str = "") -> dict[str, object]:
    name = f"train{n}" + ("-dask" if dask_address else "")
    out, result = work / name, work / f"{name}.json"
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{(work / f'mlflow-{name}.db').resolve()}")
    args = [sys.executable, __file__, WORKER_FLAG, str(cohort), str(features), str(out), config or "", str(result),
            dask_address]
    proc = subprocess.Popen(args, env=env, cwd=work)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"train failed for N={n} (exit {os.waitstatus_to_exitcode(status)})")
    data = json.loads(result.read_text())
    data["peak_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    data["n"] = n
    return data


def growth(t1: float, t2: float, n1: int, n2: int) -> str:
    return f"{math.log(t2 / t1) / math.log(n2 / n1):.2f}" if t1 > 0 and t2 > 0 else "-"


def evaluate(run_dir: Path, features: Path, truth: Path) -> None:
    """Acceptance numbers from a training's out-of-fold predictions (see the module docstring)."""
    import pandas as pd
    from scipy.stats import spearmanr

    from radiogenomics.features.schema import read_feature_table
    from radiogenomics.radiobiology import alpha_from_rsi
    from radiogenomics.training.metrics import classification_metrics

    oof_dir = run_dir / "oof"
    true_alpha = pd.read_csv(truth).set_index("patient_id")["alpha_per_gy"]
    table = read_feature_table(features).set_index("patient_id")
    for path in sorted(oof_dir.glob("*.csv")):
        task, candidate = path.stem.split("__")
        oof = pd.read_csv(path)
        oof = oof[oof["fold"] >= 0]
        if task in ("radiosensitivity", "multimodal"):
            inside = (oof["y_true"] >= oof["lower"]) & (oof["y_true"] <= oof["upper"]) if "lower" in oof else None
            print(f"{task}/{candidate}: Spearman {spearmanr(oof['y_true'], oof['y_pred'])[0]:.3f}, coverage "
                  f"{'-' if inside is None else f'{inside.mean():.3f}'} (n={len(oof)})")
        elif task == "outcome_alpha":
            alpha = oof.set_index(oof["group"].astype(str))["alpha_per_gy"]
            truth_alpha = true_alpha.reindex(alpha.index)
            print(f"outcome_alpha/{candidate}: Spearman with truth alpha {spearmanr(alpha, truth_alpha)[0]:.3f} "
                  f"(n={len(alpha)})")
            rsi = table["genomic.rsi"].reindex(alpha.index).astype(float)
            rsi_alpha = pd.Series(alpha_from_rsi(rsi.to_numpy(), invalid="nan"), index=rsi.index)
            ok = rsi_alpha.notna()
            print(f"  alpha from RSI alone: Spearman {spearmanr(rsi_alpha[ok], truth_alpha[ok])[0]:.3f} "
                  f"(n={int(ok.sum())}; outcome alpha on the same patients "
                  f"{spearmanr(alpha[ok], truth_alpha[ok])[0]:.3f}); -RSI for all: "
                  f"{spearmanr(-rsi.fillna(rsi.median()), truth_alpha)[0]:.3f}")
        elif task.startswith("toxicity"):
            m = classification_metrics(oof["y_true"].astype(int), oof["y_pred"].to_numpy(dtype=float))
            print(f"{task}/{candidate}: AUC {m['auc']:.3f}, Brier {m['brier']:.3f}, calibration slope "
                  f"{m['calibration_slope']:.2f}, intercept {m['calibration_intercept']:.2f} "
                  f"(events {int(oof['y_true'].sum())}/{len(oof)})")
        elif task == "survival":
            print(f"survival/{candidate}: out-of-fold risk in {path.name} (C-index in the run)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--evaluate":
        parser = argparse.ArgumentParser()
        parser.add_argument("--evaluate", type=Path, required=True)
        parser.add_argument("--features", type=Path, required=True)
        parser.add_argument("--truth", type=Path, required=True)
        ev = parser.parse_args()
        evaluate(ev.evaluate, ev.features, ev.truth)
        return
    if len(sys.argv) > 1 and sys.argv[1] == WORKER_FLAG:
        cohort, features, out, config, result, address = sys.argv[2:8]
        run_one(Path(cohort), Path(features), Path(out), config or None, Path(result), address or None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--grid-size", type=int, default=64)
    parser.add_argument("--config", default=None, help="TRAIN.yaml (default: the shipped defaults)")
    parser.add_argument("--work", type=Path, default=Path("bench-train"))
    parser.add_argument("--dask", action="store_true", help="also train with --dask on two local worker processes")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sorted(args.patients):
        cohort, features = prepare(n, args.grid_size, args.work)
        rows.append(measure(n, cohort, features, args.work.resolve(), args.config))
        print(f"N={n}: {rows[-1]['wall_s']:.0f} s, {rows[-1]['peak_mib']:.0f} MiB", flush=True)
    tasks = list(rows[0]["tasks"])  # type: ignore[call-overload]
    print("\n| N | wall s | peak MiB | " + " | ".join(f"{t} s" for t in tasks) + " | growth b (wall) |")
    print("| --- " * (4 + len(tasks)) + "|")
    for i, row in enumerate(rows):
        b = growth(float(rows[i - 1]["wall_s"]), float(row["wall_s"]), int(rows[i - 1]["n"]), int(row["n"])) \
            if i else "-"  # type: ignore[arg-type]
        times = " | ".join(f"{row['tasks'].get(t, float('nan')):.0f}" for t in tasks)  # type: ignore[attr-defined]
        print(f"| {row['n']} | {row['wall_s']:.0f} | {row['peak_mib']:.0f} | {times} | {b} |")
    if args.dask:
        compare_dask(rows, args)


def compare_dask(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    """Each N again with --dask on a loopback cluster of two worker processes; local vs Dask wall time."""
    import distributed

    print("\n| N | local s | --dask, 2 workers s | ratio local / dask | same winners |")
    print("| --- " * 5 + "|")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        for row in rows:
            n = int(row["n"])  # type: ignore[call-overload]
            cohort, features = prepare(n, args.grid_size, args.work)
            dask = measure(n, cohort, features, args.work.resolve(), args.config, cluster.scheduler_address)
            local_s, dask_s = float(row["wall_s"]), float(dask["wall_s"])  # type: ignore[arg-type]
            print(f"| {n} | {local_s:.0f} | {dask_s:.0f} | {local_s / dask_s:.2f} | "
                  f"{'yes' if dask['winners'] == row['winners'] else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
