"""The extraction pipeline: cohort folder -> work items -> runner -> one fused Parquet table.

Outputs, all written atomically beside ``out``:

* ``out`` (Parquet): one row per patient of patients.csv, namespaced feature columns, with the schema in its
  ``radiogenomics.*`` key-value metadata (:mod:`radiogenomics.features.schema`; ``schema_from`` reindexes
  to a reference table's schema and reuses its parameters);
* ``<stem>.dictionary.csv``: the data dictionary (one row per column);
* ``<stem>.failures.csv``: one row per failed item (patient, modality, ROI, reason); header only when none;
* ``<stem>.summary.json``: counts (computed / cached / failed), timings and peak memory per worker, and
  the run's content address (see :mod:`radiogenomics.features.uptodate`).

A re-run is cheap at two levels: when the inputs, options, library versions and outputs are all unchanged
(and the last run had no failure) the whole run is skipped; otherwise every item already in the
content-addressed cache is served from it and only the rest is computed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radiogenomics.errors import InputError
from radiogenomics.features.cache import atomic_write_bytes
from radiogenomics.features.tasks import DEEP, DOSE, RADIOMICS, ItemResult, RoiRef, WorkItem
from radiogenomics.features.uptodate import output_digests, previous_run, run_key
from radiogenomics.outputs import output_dir, output_file

if TYPE_CHECKING:  # heavy modules are imported where used, so an up-to-date re-run starts fast
    import pandas as pd

    from radiogenomics.features.genomic import MissingPolicy, Normalisation

log = logging.getLogger(__name__)

DOSE_MODALITY = "DOSE"
FAILURE_COLUMNS = ["patient_id", "kind", "modality", "roi", "error_type", "reason"]


def default_cache_dir() -> Path:
    """``$RADIOGENOMICS_CACHE_DIR``, else ``$XDG_CACHE_HOME/radiogenomics/features`` (``~/.cache/...``)."""
    env = os.environ.get("RADIOGENOMICS_CACHE_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "radiogenomics" / "features"


@dataclass
class ExtractOptions:
    """Knobs of one extraction run (the CLI maps its options onto these)."""

    params: Path | None = None  # a pyradiomics YAML used for every imaging modality; None = shipped files
    filters: tuple[str, ...] | None = None  # e.g. ("original", "log", "wavelet"); None = as in the params
    workers: int = 0
    dask_address: str | None = None
    cache_dir: Path | None = None
    use_cache: bool = True
    deep: bool = False
    deep_checkpoint: Path | None = None
    genomic_normalisation: Normalisation = "sample_median"
    genomic_missing: MissingPolicy = "available"
    genomic_min_coverage: float = 0.8
    rsi_gene_map: dict[str, str] | None = None  # RSI slot -> expression column (overrides cohort.yaml's, per slot)
    progress: bool = False
    schema_from: Path | None = None  # a reference feature table: reuse its parameters and exactly its columns


@dataclass
class ExtractSummary:
    """What a run did; ``failed > 0`` means failures.csv lists the items that could not be computed."""

    out: str
    dictionary: str
    failures: str
    n_patients: int
    n_columns: int
    n_items: int
    computed: int
    cached: int
    failed: int
    failed_patients: list[str]
    seconds: float
    workers: str
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # CPU time of this process plus every computed item (in any worker)
    up_to_date: bool = False
    run_key: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # run-level problems that are not item failures

    def one_line(self) -> str:
        return (f"{self.n_patients} patients, {self.n_columns} columns -> {self.out}; items: {self.computed} "
                f"computed, {self.cached} cached, {self.failed} failed"
                + (f" (see {self.failures})" if self.failed else "")
                + (" (up to date: inputs and outputs unchanged)" if self.up_to_date else "")
                + f"; {self.seconds:.1f} s")


def radiomics_params(modality: str, options: ExtractOptions, user: dict[str, Any] | None) -> dict[str, Any] | None:
    """Parameters for a modality: the user's file when given, else the shipped one; filters applied."""
    from radiogenomics.features.radiomics_extraction import params_for_modality, with_filters

    if modality == DOSE_MODALITY:
        return None
    params = user if user is not None else params_for_modality(modality)
    if params is None:
        return None
    if options.filters:
        params = with_filters(params, options.filters)
    return params


def build_items(cohort: Any, options: ExtractOptions) -> list[WorkItem]:
    """Work items for a loaded cohort: radiomics (+ deep) per image row, dose items per (patient, ROI)."""
    from radiogenomics.cohort.loader import row_structure
    from radiogenomics.features.radiomics_extraction import load_params

    user = load_params(options.params) if options.params is not None else None
    deep_config: dict[str, Any] | None = None
    if options.deep:
        from radiogenomics.features.deep import DeepConfig

        deep_config = DeepConfig(checkpoint=str(options.deep_checkpoint) if options.deep_checkpoint else None
                                 ).to_params()
    items: list[WorkItem] = []
    images = cohort.images
    params_by_modality: dict[str, dict[str, Any] | None] = {}
    for rec in images.to_dict("records"):
        pid, modality = str(rec["patient_id"]), str(rec["modality"])
        if modality == DOSE_MODALITY:
            items.extend(dose_items(images, pid, str(rec["image"]), getattr(cohort, "structure_aliases", None)))
            continue
        if modality not in params_by_modality:
            params_by_modality[modality] = radiomics_params(modality, options, user)
        params = params_by_modality[modality]
        base = WorkItem(kind=RADIOMICS, patient_id=pid, modality=modality, roi=str(rec["roi"]),
                        image=str(rec["image"]), mask=None if rec["mask"] is None else str(rec["mask"]),
                        label=int(rec["label"]), structure=row_structure(rec) or "",
                        aliases=_aliases(cohort, str(rec["roi"])))
        if params is not None:
            items.append(replace(base, params=params))
        if deep_config is not None:
            items.append(replace(base, kind=DEEP, params=deep_config))
    return items


def _aliases(cohort: Any, role: str) -> tuple[str, ...]:
    from radiogenomics.cohort.roles import aliases_for

    return aliases_for(getattr(cohort, "structure_aliases", None) or {}, role)


def dose_items(images: pd.DataFrame, pid: str, dose_image: str,
               structure_aliases: dict[str, tuple[str, ...]] | None = None) -> list[WorkItem]:
    """One dose item per ROI role of the patient. Each lists every (mask, label, image) row naming that role
    as candidates: the first that reads cleanly defines the structure (a corrupt CT does not cost the DVHs
    when the same label map can be read on the PET grid). ``structure_aliases``: cohort.yaml's."""
    from radiogenomics.cohort.loader import row_structure
    from radiogenomics.cohort.roles import aliases_for

    rows = images[(images["patient_id"] == pid) & (images["modality"] != DOSE_MODALITY) & images["mask"].notna()]
    by_roi: dict[str, list[RoiRef]] = {}
    for other in rows.to_dict("records"):
        ref = RoiRef(mask=str(other["mask"]), roi=str(other["roi"]), label=int(other["label"]),
                     reference_image=str(other["image"]), structure=row_structure(other) or "",
                     aliases=aliases_for(structure_aliases or {}, str(other["roi"])))
        candidates = by_roi.setdefault(ref.roi, [])
        if ref not in candidates:
            candidates.append(ref)
    return [WorkItem(kind=DOSE, patient_id=pid, modality=DOSE_MODALITY, roi=roi, image=dose_image,
                     rois=tuple(refs)) for roi, refs in by_roi.items()]


def failures_frame(results: Sequence[ItemResult]) -> pd.DataFrame:
    import pandas as pd

    rows = [{"patient_id": r.item.patient_id, "kind": r.item.kind, "modality": r.item.modality, "roi": r.item.roi,
             "error_type": r.error_type, "reason": r.reason} for r in results if r.status == "failed"]
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def _sources(results: Sequence[ItemResult]) -> dict[str, set[str]]:
    sources: dict[str, set[str]] = {}
    for r in results:
        src = "dose" if r.item.kind == DOSE else r.item.modality
        sources.setdefault(src, set())
        if r.status != "failed" and r.features:
            sources[src].add(r.item.patient_id)
    return sources


def fused_table(cohort: Any, results: Sequence[ItemResult], options: ExtractOptions) -> pd.DataFrame:
    """The fused feature table of a cohort from its item results (genomic, dvh.csv and clinical added here).

    The column set depends on the cohort's sources and the parameters, not on which patients succeeded:
    every (kind, modality, ROI) of the work items has its columns (NaN where nothing was produced) and every
    source (each images.csv modality, ``dose`` when there are DOSE rows or dvh.csv, ``genomic`` when there is
    expression.csv) has its ``available.*`` flag.
    """
    from radiogenomics.features import fusion, naming
    from radiogenomics.features.expected import unproduced_columns
    from radiogenomics.features.genomic import genomic_available, genomic_features

    patient_ids = [str(p) for p in cohort.patients[naming.PATIENT_ID]]
    sources = _sources(results)
    parts: list[pd.DataFrame] = [fusion.clinical_frame(cohort.patients), fusion.item_frame(results),
                                 unproduced_columns(results)]
    for modality in cohort.images["modality"].astype(str).unique():
        sources.setdefault("dose" if modality == DOSE_MODALITY else modality, set())
    if cohort.dvh is not None:
        sources.setdefault("dose", set())
    if cohort.dvh is not None and len(cohort.dvh):
        # Every dvh.csv structure counts: a structure with a mask on the dose grid takes the grid's values (the
        # earlier part wins in fuse), one that only dvh.csv describes (e.g. pharyngeal constrictors without a
        # mask in images.csv) gets its features from dvh.csv, and a failed grid item is filled from dvh.csv.
        dvh_part = fusion_dvh(cohort.dvh)
        parts.append(dvh_part)
        sources.setdefault("dose", set()).update(str(p) for p in dvh_part.index)
    if cohort.expression is not None and len(cohort.expression):
        genomic = genomic_features(cohort.expression, normalisation=options.genomic_normalisation,
                                   missing=options.genomic_missing, min_coverage=options.genomic_min_coverage,
                                   gene_map=rsi_gene_map(cohort, options) or None)
        parts.append(genomic)
        sources["genomic"] = {str(p) for p in genomic.index[genomic_available(genomic)]}
    elif cohort.expression is not None:
        sources["genomic"] = set()
    parts.append(fusion.availability_frame(patient_ids, sources))
    return fusion.fuse(patient_ids, parts)


def rsi_gene_map(cohort: Any, options: ExtractOptions) -> dict[str, str]:
    """The RSI slot map in effect: cohort.yaml's ``rsi_gene_map`` overridden slot by slot by the option."""
    from radiogenomics.cohort.rsi_gene_map import merge_gene_maps

    return merge_gene_maps(getattr(cohort, "rsi_gene_map", {}), options.rsi_gene_map)


def run_warnings(cohort: Any, options: ExtractOptions) -> list[str]:
    """Problems of the whole run that no item failure shows, each logged as a warning: an RSI that is NaN for
    every patient because an RSI slot has no expression column (naming the slot and the fix)."""
    from radiogenomics.cohort.rsi_gene_map import rsi_unavailable_warning

    warnings: list[str] = []
    if cohort.expression is not None and len(cohort.expression):
        rsi = rsi_unavailable_warning(cohort.expression.columns, rsi_gene_map(cohort, options))
        if rsi:
            warnings.append(rsi)
    for line in warnings:
        log.warning("extract: %s", line)
    return warnings


def fusion_dvh(dvh: pd.DataFrame) -> pd.DataFrame:
    from radiogenomics.features.dosimetric import dvh_table_features

    return dvh_table_features(dvh)


def _this_worker() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def _run_options(options: ExtractOptions) -> dict[str, Any]:
    """The options that change the output (not workers, Dask or cache location)."""
    return {"params": Path(options.params) if options.params else None,
            "filters": list(options.filters) if options.filters else None, "deep": options.deep,
            "deep_checkpoint": Path(options.deep_checkpoint) if options.deep_checkpoint else None,
            "genomic_normalisation": options.genomic_normalisation, "genomic_missing": options.genomic_missing,
            "genomic_min_coverage": options.genomic_min_coverage,
            "rsi_gene_map": dict(sorted((options.rsi_gene_map or {}).items())),
            "schema_from": Path(options.schema_from) if options.schema_from else None}


def output_paths(out: Path) -> tuple[Path, Path, Path]:
    """(dictionary, failures, summary) paths beside the Parquet output."""
    stem = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
    return (out.with_name(f"{stem}.dictionary.csv"), out.with_name(f"{stem}.failures.csv"),
            out.with_name(f"{stem}.summary.json"))


def extract(cohort_path: Path | str, out: Path | str, options: ExtractOptions | None = None) -> ExtractSummary:
    """Run the whole pipeline on a cohort folder and write the outputs (see module docstring)."""
    options = options or ExtractOptions()
    start = time.perf_counter()
    out = Path(out).resolve()
    if out.suffix != ".parquet":
        raise InputError(f"the output must be a .parquet file, got {out}", fix="use --out FEATURES.parquet")
    output_file(out, "feature table")
    dictionary_path, failures_path, summary_path = output_paths(out)
    reference = None
    if options.schema_from is not None:
        from radiogenomics.features.schema import read_feature_schema

        reference = read_feature_schema(options.schema_from)
        options = with_reference_params(options, reference, out)
    key = run_key(cohort_path, _run_options(options)) if options.use_cache else None
    previous = previous_run(summary_path, key)
    if previous is not None:
        fields = set(ExtractSummary.__dataclass_fields__)
        summary = ExtractSummary(**{k: v for k, v in previous.items() if k in fields})
        summary = replace(summary, computed=0, cached=summary.n_items, seconds=time.perf_counter() - start,
                          up_to_date=True, peak_rss_mb={}, cpu_seconds=time.process_time())
        atomic_write_bytes(summary_path, json.dumps(asdict(summary), indent=2).encode())
        log.info("extract: up to date (run key %s)", key)
        return summary
    from radiogenomics.cohort import load_cohort
    from radiogenomics.features import fusion
    from radiogenomics.features.runner import default_workers, run_items, warm_up_pool

    if not options.dask_address and (options.workers or default_workers()) > 1:
        warm_up_pool()
    cohort = load_cohort(cohort_path, rsi_gene_map=options.rsi_gene_map)
    items = build_items(cohort, options)
    cache_dir = None
    if options.use_cache:
        cache_dir = str(output_dir(Path(options.cache_dir or default_cache_dir()).resolve(), "cache folder"))
    log.info("extract: %d patients, %d items, cache %s", len(cohort.patients), len(items), cache_dir)
    results = run_items(items, cache_dir, workers=options.workers, dask_address=options.dask_address,
                        progress=options.progress)
    table = fused_table(cohort, results, options)
    warnings = run_warnings(cohort, options)
    table, metadata = schema_table(table, options, reference)
    out.parent.mkdir(parents=True, exist_ok=True)
    fusion.write_parquet(table, out, metadata)
    fusion.write_csv(fusion.data_dictionary(table), dictionary_path)
    failures = failures_frame(results)
    fusion.write_csv(failures, failures_path)
    peak: dict[str, float] = {}
    for r in results:
        if r.worker:
            peak[r.worker] = max(peak.get(r.worker, 0.0), r.peak_rss_mb)
    summary = ExtractSummary(
        out=str(out), dictionary=str(dictionary_path), failures=str(failures_path),
        n_patients=len(table), n_columns=table.shape[1] - 1, n_items=len(results),
        computed=sum(r.status == "computed" for r in results), cached=sum(r.status == "cached" for r in results),
        failed=len(failures), failed_patients=sorted(set(failures["patient_id"])),
        seconds=time.perf_counter() - start,
        workers=f"dask {options.dask_address}" if options.dask_address else f"{options.workers or 'all'} local",
        peak_rss_mb=peak, cpu_seconds=time.process_time() + sum(
            r.cpu_seconds for r in results if r.worker and r.worker != _this_worker()), warnings=warnings)
    if summary.failed == 0 and key is not None:
        summary.run_key = key
        summary.outputs = output_digests([out, dictionary_path, failures_path])
    atomic_write_bytes(summary_path, json.dumps(asdict(summary), indent=2).encode())
    return summary


def extraction_params(options: ExtractOptions) -> dict[str, Any]:
    """The parameters that define the feature table's columns and values, machine-independent (no paths):
    stored as ``radiogenomics.params`` in the Parquet metadata and reused by ``--schema-from``."""
    from radiogenomics.features.cache import file_digest
    from radiogenomics.features.radiomics_extraction import load_params

    return {"radiomics_params": load_params(options.params) if options.params else None,
            "filters": list(options.filters) if options.filters else None, "deep": bool(options.deep),
            "deep_checkpoint_sha256": file_digest(options.deep_checkpoint) if options.deep_checkpoint else None,
            "genomic_normalisation": options.genomic_normalisation, "genomic_missing": options.genomic_missing,
            "genomic_min_coverage": float(options.genomic_min_coverage),
            "rsi_gene_map": dict(sorted((options.rsi_gene_map or {}).items()))}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def with_reference_params(options: ExtractOptions, reference: Any, out: Path) -> ExtractOptions:
    """``options`` with the extraction parameters of a reference table (a :class:`FeatureSchema`).

    An option left at its default takes the reference's value; one set to a different value raises
    InputError (the table could not match the reference). The reference's own pyradiomics parameters are
    written beside the output as ``<stem>.params.yaml`` and used from there. ``rsi_gene_map`` names the
    columns of one cohort's expression.csv, so it is recorded but neither reused nor compared.
    """
    import yaml

    from radiogenomics.features.schema import code_version

    source = str(options.schema_from)
    mine, defaults = extraction_params(options), extraction_params(ExtractOptions())
    changes: dict[str, Any] = {}
    conflicts: list[str] = []
    for name, ref_value in reference.params.items():
        if name not in mine or name == "rsi_gene_map" or _canonical(mine[name]) == _canonical(ref_value):
            continue
        if _canonical(mine[name]) != _canonical(defaults[name]):
            conflicts.append(name)  # set explicitly, to another value than the reference's
        else:
            changes[name] = ref_value
    if conflicts:
        raise InputError(f"extraction option(s) {', '.join(conflicts)} differ from those of the reference table",
                         file=source, fix="leave them out to reuse the reference's parameters, or extract "
                                          "without --schema-from")
    updates: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "radiomics_params":
            stem = out.name[: -len(".parquet")]
            params_path = out.with_name(f"{stem}.params.yaml")
            atomic_write_bytes(params_path, yaml.safe_dump(value, sort_keys=True).encode())
            updates["params"] = params_path
        elif name == "filters":
            updates["filters"] = tuple(value) if value else None
        elif name == "deep_checkpoint_sha256":
            raise InputError(f"the reference table was made with the deep-feature checkpoint sha256 {value}",
                             file=source, fix="pass --deep-checkpoint with those weights")
        else:
            updates[name] = value
    if reference.version.get("code_sha256") not in (None, code_version()["code_sha256"]):
        log.warning("extract: the reference table %s was written by another code version (%s); its columns are "
                    "kept, values may differ", source, reference.version.get("package"))
    return replace(options, **updates)


def schema_table(table: pd.DataFrame, options: ExtractOptions, reference: Any) -> tuple[pd.DataFrame,
                                                                                         dict[str, str]]:
    """The table to write (reindexed to the reference schema when there is one) and its Parquet metadata."""
    from radiogenomics.features.schema import build_schema, reindex_to_schema

    if reference is not None:
        table, dropped = reindex_to_schema(table, reference)
        if dropped:
            log.warning("extract: %d column(s) absent from the reference table %s dropped: %s%s", len(dropped),
                        options.schema_from, ", ".join(dropped[:10]), " ..." if len(dropped) > 10 else "")
    return table, build_schema(table, extraction_params(options)).to_metadata()
