"""Benchmark `radiogenomics extract` against a plain sequential pyradiomics loop.

On one synthetic cohort it times, each as a fresh Python process (so start-up and imports count for both):

1. baseline: a sequential loop calling ``RadiomicsFeatureExtractor.execute`` on every (image, mask, label)
   row of images.csv with the same shipped parameter files the pipeline uses;
2. ``radiogenomics extract --workers N`` with an empty cache (first run);
3. the same command again (the cached re-run: inputs unchanged, so the whole run is skipped after
   hashing the inputs and checking the outputs);
4. the command with a new output path (no run-level skip: every item comes from the item cache and the
   table is rebuilt).

It prints patients per minute, the speed-up ratios and the peak resident memory per worker process.
Targets (issue 4): first run >= 1.8x the sequential loop on 2 cores; cached re-run >= 20x faster than the
first run. The pipeline does strictly more work than the baseline (dose features per structure, genomic
features, the fused table and its dictionary).

Then (issue 18.5, skipped with ``--clinical-grid none``) one patient at clinical geometry: the same seed's patient
written on the native grid (``--grid``) and on ``--clinical-grid`` voxels of ``--clinical-spacing`` mm (default a
512 x 512 x 150 CT at 0.98 x 0.98 x 3 mm), each extracted by ``radiogenomics extract --workers 1`` as a fresh
process. It prints both geometries, the clinical/native time ratio (target <= 3x), per CT/GTV item the time of our
item (decode + box + pyradiomics) against plain pyradiomics with its default settings on the same image and mask
(target >= 5x faster), and the peak memory of the extraction at each size.

With ``--deep`` (issue 18.3) it runs only this: the same two one-patient cohorts, and per CT/GTV and PET_FDG/GTV
deep item (preprocessing and embedding, images decoded beforehand) the time and the peak memory the item adds to a
warmed-up process, with the whole image resampled (before) and with the box only (after), each in a fresh process;
the before/after ratios and the clinical/native ratio of each path.

    python benchmarks/extract.py [--patients 16] [--grid 64] [--workers 2] [--filters original,log,wavelet]
                                 [--cohort DIR] [--keep DIR] [--clinical-grid 512,512,150]
                                 [--clinical-spacing 0.98,0.98,3.0] [--deep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SPEEDUP = 1.8
TARGET_CACHED = 20.0
TARGET_CLINICAL_RATIO = 3.0
TARGET_VS_PYRADIOMICS = 5.0


def ct_gtv_item(cohort: Path, repeats: int = 3) -> dict[str, float]:
    """(child process) Best-of-``repeats`` seconds of one CT/GTV item: ours (decode with a fresh PatientReader, then
    the box path with the shipped CT parameters) and plain pyradiomics with default settings on the same files."""
    import pandas as pd
    from radiomics import featureextractor

    from radiogenomics.features.radiomics_extraction import _extractor, canonical_json, params_for_modality
    from radiogenomics.features.tasks import RADIOMICS, WorkItem, compute_item

    rows = pd.read_csv(cohort / "images.csv", dtype=str)
    row = rows[(rows["modality"] == "CT") & (rows["roi"] == "GTV")].iloc[0]
    image, mask = str(cohort / row["image"]), str(cohort / row["mask"])
    params = params_for_modality("CT") or {}
    _extractor(canonical_json(params))  # built once per process, as in a worker
    plain = featureextractor.RadiomicsFeatureExtractor()
    item = WorkItem(kind=RADIOMICS, patient_id=row["patient_id"], modality="CT", roi="GTV", image=image, mask=mask,
                    label=int(row["label"]), params=params)
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        compute_item(item)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain.execute(image, mask, label=int(row["label"]))
        theirs.append(time.perf_counter() - start)
    return {"ours_s": min(ours), "pyradiomics_default_s": min(theirs)}


def one_patient(work: Path, args: argparse.Namespace, name: str) -> Path:
    """The one-patient cohort of ``name`` ("native": ``--grid``; "clinical": ``--clinical-grid`` and
    ``--clinical-spacing``), the same seed, generated once under ``work``."""
    from radiogenomics.synthetic.generate import generate_cohort

    grid, spacing = (str(args.grid), None) if name == "native" else (args.clinical_grid, args.clinical_spacing)
    cohort = work / f"one-{name}"
    if not (cohort / "patients.csv").exists():
        start = time.perf_counter()
        generate_cohort(cohort, n_patients=1, seed=args.seed, grid_size=grid, spacing_mm=spacing, workers=1,
                        overwrite=True)
        print(f"synth {name}: {time.perf_counter() - start:.1f} s")
    return cohort


def deep_item(cohort: Path, modality: str, path: str, repeats: int = 5) -> dict[str, float]:
    """(child process, one per path so peaks do not mix) Best-of-``repeats`` seconds of one deep GTV item of
    ``modality`` (preprocessing to the encoder input, then the embedding), images decoded beforehand, and the peak
    resident memory it adds to the warmed-up process. ``path``: "full" (resample the whole image, then cut the
    box: before issue 18.3) or "box" (resample the box only: after)."""
    import pandas as pd
    import torch

    from radiogenomics.features import deep
    from radiogenomics.features.tasks import PatientReader

    rows = pd.read_csv(cohort / "images.csv", dtype=str)
    row = rows[(rows["modality"] == modality) & (rows["roi"] == "GTV")].iloc[0]
    image, mask = str(cohort / row["image"]), str(cohort / row["mask"])
    config = deep.DeepConfig()
    preprocess = deep._preprocess_full if path == "full" else deep.preprocess
    reader = PatientReader()
    reader.image(image)
    reader.image(mask)
    deep.embed(torch.zeros((1, 2, *config.box_voxels)), config)  # encoder built and run once, as in a worker
    before_mb = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x = preprocess(image, mask, "GTV", int(row["label"]), modality, config, row["patient_id"], reader=reader)
        deep.embed(x[None], config)
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": min(times), "added_peak_mb": max(0.0, peak_mb - before_mb)}


def deep_comparison(work: Path, args: argparse.Namespace) -> None:
    """Per-item time and added peak memory of the deep path (issue 18.3), native vs clinical geometry, before (whole
    image resampled) and after (box only), each in a fresh process."""
    import SimpleITK as sitk

    results: dict[tuple[str, str, str], dict[str, float]] = {}
    for name in ("native", "clinical"):
        cohort = one_patient(work, args, name)
        ct = sitk.ReadImage(str(cohort / "images" / "SYN0001" / "ct.nii.gz"))
        print(f"{name:8s} geometry: CT {'x'.join(map(str, ct.GetSize()))} voxels of "
              f"{'x'.join(f'{v:g}' for v in ct.GetSpacing())} mm")
        for modality in ("CT", "PET_FDG"):
            for path in ("full", "box"):
                _, out = _timed([sys.executable, __file__, "--deep-item", str(cohort), modality, path])
                results[name, modality, path] = json.loads(out.strip().splitlines()[-1])
            full, box = results[name, modality, "full"], results[name, modality, "box"]
            print(f"  deep {modality}/GTV item: whole image {full['seconds']:.3f} s, +{full['added_peak_mb']:.0f} MB "
                  f"peak; box only {box['seconds']:.3f} s, +{box['added_peak_mb']:.0f} MB peak -> "
                  f"{full['seconds'] / box['seconds']:.1f}x faster, "
                  f"{full['added_peak_mb'] / max(box['added_peak_mb'], 1.0):.1f}x less added memory")
    for modality in ("CT", "PET_FDG"):
        for path in ("full", "box"):
            ratio = results["clinical", modality, path]["seconds"] / results["native", modality, path]["seconds"]
            print(f"clinical / native deep {modality} item time, {'whole image' if path == 'full' else 'box only'}: "
                  f"{ratio:.2f}x")


def clinical_comparison(work: Path, args: argparse.Namespace) -> None:
    """Native vs clinical geometry for one patient (same seed: the same patient), and the CT/GTV item ratio."""
    import SimpleITK as sitk

    seconds: dict[str, float] = {}
    for name in ("native", "clinical"):
        cohort = one_patient(work, args, name)
        ct = sitk.ReadImage(str(cohort / "images" / "SYN0001" / "ct.nii.gz"))
        out = work / f"one-{name}.parquet"
        cmd = [sys.executable, "-m", "radiogenomics", "extract", str(cohort), "--out", str(out), "--workers", "1",
               "--no-cache", "--no-progress", "--filters", args.filters]
        seconds[name], _ = _timed(cmd)
        summary = json.loads((work / f"one-{name}.summary.json").read_text())
        peak = max(summary.get("peak_rss_mb", {}).values(), default=0.0)
        item_t, item_out = _timed([sys.executable, __file__, "--item-only", str(cohort)])
        item = json.loads(item_out.strip().splitlines()[-1])
        print(f"{name:8s} geometry: CT {'x'.join(map(str, ct.GetSize()))} voxels of "
              f"{'x'.join(f'{v:g}' for v in ct.GetSpacing())} mm; extract --workers 1: {seconds[name]:.1f} s, "
              f"peak RSS {peak:.0f} MB; CT/GTV item: ours {item['ours_s']:.2f} s, plain pyradiomics (defaults) "
              f"{item['pyradiomics_default_s']:.2f} s -> {item['pyradiomics_default_s'] / item['ours_s']:.1f}x "
              f"(target >= {TARGET_VS_PYRADIOMICS:.0f}x)")
    ratio = seconds["clinical"] / seconds["native"]
    print(f"clinical / native extraction time: {ratio:.2f}x (target <= {TARGET_CLINICAL_RATIO:.0f}x)")


def baseline_loop(cohort: Path, filters: tuple[str, ...]) -> dict[str, float]:
    """The plain loop (run in a child process): pyradiomics on every image row, shipped parameters."""
    import pandas as pd
    import radiomics
    from radiomics import featureextractor

    from radiogenomics.features.radiomics_extraction import params_for_modality, with_filters

    radiomics.setVerbosity(40)
    images = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    extractors: dict[str, featureextractor.RadiomicsFeatureExtractor] = {}
    n_features = 0
    for rec in images.to_dict("records"):
        modality = rec["modality"]
        params = params_for_modality(modality)
        if params is None:
            continue
        params = with_filters(params, filters)
        if modality not in extractors:
            extractors[modality] = featureextractor.RadiomicsFeatureExtractor(params)
        label = int(rec["label"] or 1)
        result = extractors[modality].execute(str(cohort / rec["image"]), str(cohort / rec["mask"]), label=label)
        n_features += sum(1 for k in result if not k.startswith("diagnostics_"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"n_features": float(n_features), "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime}


def _timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return seconds, res.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--grid", type=int, default=64, help="synthetic grid size (voxels per axis)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--filters", default="original,log,wavelet",
                        help="pyradiomics image types for both runs (default: the full Original+LoG+Wavelet set)")
    parser.add_argument("--cohort", type=Path, help="use this cohort instead of generating one")
    parser.add_argument("--keep", type=Path, help="keep outputs and cache in this folder")
    parser.add_argument("--baseline-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--item-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clinical-grid", default="512,512,150",
                        help="voxels X,Y,Z of the clinical-size patient ('none' to skip)")
    parser.add_argument("--clinical-spacing", default="0.98,0.98,3.0", help="its spacing X,Y,Z in mm")
    parser.add_argument("--deep", action="store_true",
                        help="only the deep path (issue 18.3): per-item time and peak memory, native vs clinical, "
                             "whole-image resampling vs box only")
    parser.add_argument("--deep-item", nargs=3, metavar=("COHORT", "MODALITY", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    filters = tuple(f.strip() for f in args.filters.split(",") if f.strip())
    if args.baseline_only:
        print(json.dumps(baseline_loop(args.baseline_only, filters)))
        return 0
    if args.item_only:
        print(json.dumps(ct_gtv_item(args.item_only)))
        return 0
    if args.deep_item:
        print(json.dumps(deep_item(Path(args.deep_item[0]), args.deep_item[1], args.deep_item[2])))
        return 0

    load_at_start = os.getloadavg()[0]
    work = args.keep or Path(tempfile.mkdtemp(prefix="rg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.deep:
        deep_comparison(work, args)
        return 0
    cohort = args.cohort
    if cohort is None:
        from radiogenomics.synthetic.generate import generate_cohort

        cohort = work / "cohort"
        if not (cohort / "patients.csv").exists():
            generate_cohort(cohort, n_patients=args.patients, seed=args.seed, grid_size=args.grid)
    import pandas as pd

    n_patients = len(pd.read_csv(cohort / "patients.csv", dtype=str))
    n_rows = int((pd.read_csv(cohort / "images.csv", dtype=str)["modality"] != "DOSE").sum())

    t_base, out = _timed([sys.executable, __file__, "--baseline-only", str(cohort), "--filters", args.filters])
    base = json.loads(out.strip().splitlines()[-1])

    cache = work / "cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    cmd = [sys.executable, "-m", "radiogenomics", "extract", str(cohort), "--out", str(work / "features.parquet"),
           "--workers", str(args.workers), "--cache-dir", str(cache), "--no-progress", "--filters", args.filters]
    t_first, _ = _timed(cmd)
    first = json.loads((work / "features.summary.json").read_text())
    t_cached, _ = _timed(cmd)
    cached = json.loads((work / "features.summary.json").read_text())
    items_cmd = [*cmd]
    items_cmd[items_cmd.index("--out") + 1] = str(work / "features_items.parquet")
    t_items, _ = _timed(items_cmd)
    from_items = json.loads((work / "features_items.summary.json").read_text())

    def ppm(seconds: float) -> float:
        return 60.0 * n_patients / seconds

    speedup, cached_ratio = t_base / t_first, t_first / t_cached
    print(f"cohort: {n_patients} patients, {n_rows} radiomics rows, grid {args.grid}^3; filters {args.filters}; "
          f"{os.cpu_count()} CPUs visible; {args.workers} workers; load average at start {load_at_start:.2f}")
    print(f"sequential pyradiomics loop : {t_base:7.1f} s  {ppm(t_base):7.2f} patients/min  "
          f"peak RSS {base['peak_rss_mb']:.0f} MB")
    print(f"radiogenomics extract (1st) : {t_first:7.1f} s  {ppm(t_first):7.2f} patients/min  "
          f"({first['computed']} items computed)")
    print(f"radiogenomics extract (2nd) : {t_cached:7.1f} s  {ppm(t_cached):7.2f} patients/min  "
          f"({cached['cached']} items cached, {cached['computed']} computed, up to date: {cached['up_to_date']})")
    print(f"  new output, item cache    : {t_items:7.1f} s  {ppm(t_items):7.2f} patients/min  "
          f"({from_items['cached']} items cached, {from_items['computed']} computed)")
    print(f"speed-up vs sequential loop : {speedup:.2f}x (target >= {TARGET_SPEEDUP}x)")
    work_ratio = base["cpu_seconds"] / first["cpu_seconds"]
    print(f"CPU seconds                 : loop {base['cpu_seconds']:.1f} s, extract {first['cpu_seconds']:.1f} s "
          f"(main process + items in workers): {work_ratio:.2f}x less CPU work per patient")
    print(f"cached re-run vs first run  : {cached_ratio:.1f}x (target >= {TARGET_CACHED}x); "
          f"rebuild from the item cache: {t_first / t_items:.1f}x")
    for worker, mb in sorted(first["peak_rss_mb"].items()):
        print(f"peak RSS worker {worker}: {mb:.0f} MB")
    if args.clinical_grid.lower() != "none":
        clinical_comparison(work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
