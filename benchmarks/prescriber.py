"""CPU cost of ``Prescriber.predict_records`` at a realistic feature count, and a check that results never change.

    python benchmarks/prescriber.py [--work DIR] [--reps 30] [--save-baseline] [--profile]

Setup (not timed; reused when ``--work`` already holds it): a synthetic cohort of 30 patients
(``radiogenomics.synthetic.generate_cohort``, seed 5, 16^3 grid) extracted with the default
``ExtractOptions`` (every shipped image filter: ~1,400 feature columns, as a real feature table has), an RSI
surrogate and a xerostomia classifier with their default settings (elastic net after screening, CV+ with 5
folds; calibrated monotone logistic regression), and the :class:`Prescriber` built from them with
``Prescriber.from_training`` (applicability domain fitted). The prescriber is pickled to ``DIR/prescriber.pkl``
on first use, so later runs (and later code) score the very same fitted objects, as a registered model would be.

Timed: ``predict_records`` for 1 patient (no regimen columns) and for 32 patients (the 30 plus two renamed
copies; a ``n_fractions`` column on some rows), single-threaded BLAS, after two warm-up calls: the median
wall and CPU milliseconds of ``--reps`` calls (32 patients: a third as many).

``--save-baseline`` writes the records and timings of the current code to ``DIR/baseline.json``. Every later
run compares its records with that file (equal except ``created_at``: numbers to 1e-12 relative, text, flags
and ``input_sha256`` identical; exit status 1 otherwise) and prints the speed-up against the baseline.
``--profile`` prints the 25 most expensive functions (cumulative) of the 1-patient call.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import math
import pickle
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("benchmarks.prescriber")
N_PATIENTS, SEED, GRID = 30, 5, 16
REL_TOL = 1e-12


def build_prescriber(work: Path) -> tuple[Any, pd.DataFrame]:
    """(the pickled prescriber, the feature table), built on first use."""
    from threadpoolctl import threadpool_limits

    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.features.schema import read_feature_schema, read_feature_table
    from radiogenomics.models.prescriber import Prescriber
    from radiogenomics.models.radiosensitivity import RSISurrogate
    from radiogenomics.models.toxicity import ToxicityClassifier
    from radiogenomics.synthetic import generate_cohort

    cohort, features, pickled = work / "cohort", work / "features.parquet", work / "prescriber.pkl"
    if not features.is_file():
        generate_cohort(cohort, n_patients=N_PATIENTS, seed=SEED, grid_size=GRID, overwrite=True)
        extract(cohort, features, ExtractOptions(workers=1, cache_dir=work / "cache"))
    table = read_feature_table(features)
    if not pickled.is_file():
        with threadpool_limits(1):
            rsi = RSISurrogate(random_state=0).fit(table)
            tox = ToxicityClassifier(endpoint="xerostomia", random_state=0).fit(table)
            prescriber = Prescriber.from_training(table, read_feature_schema(features), rsi, {"xerostomia": tox})
        pickled.write_bytes(pickle.dumps(prescriber))
    return pickle.loads(pickled.read_bytes()), table  # noqa: S301  # our own file


def inputs(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The two timed inputs: 1 patient, and 32 patients with a ``n_fractions`` column on some rows."""
    rows = table[[c for c in table.columns if not str(c).startswith("outcome.")]]
    extra = rows.iloc[:2].copy()
    extra["patient_id"] = [f"{p}-copy" for p in extra["patient_id"]]
    many = pd.concat([rows, extra], ignore_index=True)
    many["n_fractions"] = np.where(np.arange(len(many)) % 4 == 0, 30.0, np.nan)
    return {"1": rows.iloc[[0]].reset_index(drop=True), "32": many}


def time_calls(call: Callable[[], Any], reps: int) -> dict[str, float]:
    """Median wall and CPU milliseconds of ``reps`` calls after two warm-up calls."""
    for _ in range(2):
        call()
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_ms": 1e3 * statistics.median(wall), "cpu_ms": 1e3 * statistics.median(cpu)}


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Where two JSON-like record structures differ (numbers to ``REL_TOL`` relative; ``created_at`` ignored)."""
    if isinstance(old, dict) and isinstance(new, dict):
        if list(old) != list(new):
            return [f"{where}: keys {list(old)} != {list(new)}"]
        return [d for k in old if k != "created_at" for d in differences(old[k], new[k], f"{where}.{k}")]
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: {len(old)} items != {len(new)}"]
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True)) for d in differences(a, b, f"{where}[{i}]")]
    numbers = (int, float)
    if isinstance(old, numbers) and isinstance(new, numbers) and not isinstance(old, bool):
        same = (math.isnan(old) and math.isnan(new)) or old == new or math.isclose(old, new, rel_tol=REL_TOL)
        return [] if same else [f"{where}: {old!r} != {new!r}"]
    return [] if old == new and type(old) is type(new) else [f"{where}: {old!r} != {new!r}"]


def jsonable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records through a JSON round trip (NaN kept as NaN), as the baseline file stores them."""
    return json.loads(json.dumps(records, allow_nan=True))  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "radiogenomics-bench-prescriber")
    parser.add_argument("--reps", type=int, default=30, help="timed calls for 1 patient (32 patients: a third)")
    parser.add_argument("--save-baseline", action="store_true", help="store this code's records and timings")
    parser.add_argument("--profile", action="store_true", help="cProfile the 1-patient call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from threadpoolctl import threadpool_limits

    from radiogenomics.models.prescriber import ModelInfo

    args.work.mkdir(parents=True, exist_ok=True)
    prescriber, table = build_prescriber(args.work)
    info = ModelInfo("radiogenomics-prescriber", "1", "models:/radiogenomics-prescriber/1")
    frames = inputs(table)
    print(f"{len(prescriber.schema.columns)} schema columns, {len(table)} patients; work folder {args.work}")
    records: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, dict[str, float]] = {}
    with threadpool_limits(1):
        for key, frame in frames.items():
            def call(frame: pd.DataFrame = frame) -> list[dict[str, Any]]:
                return prescriber.predict_records(frame, model=info)  # type: ignore[no-any-return]
            records[key] = jsonable(call())
            timings[key] = time_calls(call, args.reps if key == "1" else max(3, args.reps // 3))
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(prescriber.predict_records, frames["1"], model=info)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    baseline_file = args.work / "baseline.json"
    if args.save_baseline:
        baseline_file.write_text(json.dumps({"records": records, "timings": timings}, allow_nan=True))
        print(f"baseline saved: {baseline_file}")
    baseline = json.loads(baseline_file.read_text()) if baseline_file.is_file() else None
    status = 0
    for key, timing in timings.items():
        line = f"{key:>2} patient(s): {timing['wall_ms']:8.1f} ms wall, {timing['cpu_ms']:8.1f} ms CPU per call"
        if baseline is not None:
            before = baseline["timings"][key]
            line += (f"   baseline {before['wall_ms']:8.1f} ms wall, {before['cpu_ms']:8.1f} ms CPU"
                     f"   speed-up x{before['cpu_ms'] / max(timing['cpu_ms'], 1e-9):.1f} (CPU)")
            diff = differences(baseline["records"][key], records[key], f"records[{key}]")
            if diff:
                status = 1
                print("RECORDS DIFFER FROM THE BASELINE:\n  " + "\n  ".join(diff[:20]))
        print(line)
    if baseline is not None and status == 0:
        print("records identical to the baseline (numbers to 1e-12 relative, input_sha256 equal)")
    return status


if __name__ == "__main__":
    sys.exit(main())
