"""Run-level content addressing: skip a whole run whose inputs and outputs are unchanged (like `make`).

The run key is the SHA-256 of every input the output depends on: the cohort tables, the bytes of every
image and mask images.csv references, the parameter file and checkpoint bytes, the options that change
features, the library versions, and the digest of every code and data file of the package itself (a changed
signature YAML or reader gives a new key; the item cache still serves the items that do not depend on it).
A run that completed without failures records its key and the digests of the files it wrote in
``<stem>.summary.json``; a later run with the same key whose outputs are still byte-identical has nothing to
do. Any difference (an input byte, an option, a library upgrade, a package file, an edited or deleted
output, a previous failure) falls through to the normal, item-cached run.

Standard library only, so the check costs no heavy imports.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radiogenomics.features.cache import file_digest, library_versions
from radiogenomics.features.provenance import package_digest

TABLES = ("cohort.yaml", "patients.csv", "images.csv", "expression.csv", "dvh.csv")
PACKAGES = ("radiogenomics", "pyradiomics-bhklab", "SimpleITK", "numpy", "scipy", "PyWavelets", "pandas", "pyarrow",
            "monai", "torch", "scikit-learn")


def _referenced_paths(cohort: Path) -> list[Path]:
    images = cohort / "images.csv"
    if not images.is_file():
        return []
    paths: list[Path] = []
    with images.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            for column in ("image", "mask"):
                text = (row.get(column) or "").strip()
                if text:
                    path = Path(text)
                    paths.append(path if path.is_absolute() else cohort / path)
    return sorted(set(paths))


def _expression_paths(cohort: Path) -> list[Path]:
    """Expression files cohort.yaml's ``expression:`` declares (a table or one file per patient; none by default)."""
    if not (cohort / "cohort.yaml").is_file():
        return []
    # Imported here, not at the top: only for a cohort with a cohort.yaml, whose loading imported it already.
    from radiogenomics.cohort.expression_layouts import declared_input_files

    return declared_input_files(cohort)


def run_key(cohort: Path | str, options: Mapping[str, Any]) -> str | None:
    """The content address of a run, or None when an input cannot be read (then never skip)."""
    cohort = Path(cohort).resolve()
    try:
        payload = {
            "tables": {name: file_digest(cohort / name) if (cohort / name).exists() else None for name in TABLES},
            "files": [[str(p), file_digest(p)] for p in _referenced_paths(cohort) + _expression_paths(cohort)],
            "options": {k: (file_digest(v) if isinstance(v, Path) else v) for k, v in sorted(options.items())},
            "versions": library_versions(PACKAGES),
            "code": package_digest(),
        }
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def output_digests(paths: list[Path]) -> dict[str, str]:
    return {str(p): file_digest(p) for p in paths}


def previous_run(summary_path: Path, key: str | None) -> dict[str, Any] | None:
    """The recorded summary when it has this key, no failures, and every output is byte-identical."""
    if key is None or not summary_path.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary.get("run_key") != key or summary.get("failed", 1) != 0:
            return None
        outputs = summary.get("outputs") or {}
        if not outputs:
            return None
        for path, digest in outputs.items():
            if not Path(path).is_file() or file_digest(path) != digest:
                return None
    except (OSError, ValueError, AttributeError):
        return None
    return dict(summary)
