"""The patients' own dose distributions as DVHs per structure, for the safety gate's OAR limits.

The feature table keeps the dose metrics of the structures a model was trained on; the safety gate checks the
rails' OAR limits on *every* organ the patient has (contract section 2: "also for structures the model does not
use"). :func:`cohort_dvhs` reads them from the cohort: each DOSE grid with every ROI mask of the patient
(:func:`radiogenomics.radiobiology.compute_dvh`, the same DVH the extraction computes), or the patient's rows of
dvh.csv. A structure whose DVH cannot be computed is logged and left out (its limits are then unchecked, and
the record says so); it never stops the other patients.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)


def cohort_dvhs(cohort: str | Path | Any, patient_ids: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{patient_id: {structure: DVH}}`` of a cohort folder (or a loaded :class:`~radiogenomics.cohort.Cohort`):
    DVHs from the DOSE grids, else from dvh.csv (a grid's DVH wins for the same structure)."""
    from radiogenomics.cohort import load_cohort
    from radiogenomics.features.pipeline import DOSE_MODALITY, dose_items
    from radiogenomics.features.tasks import dose_and_mask
    from radiogenomics.models.dose_scaling import dvhs_from_table
    from radiogenomics.radiobiology import compute_dvh

    loaded = load_cohort(cohort) if isinstance(cohort, str | Path) else cohort
    wanted = None if patient_ids is None else {str(p) for p in patient_ids}
    out: dict[str, dict[str, Any]] = {}
    if loaded.dvh is not None and not loaded.dvh.empty:
        table = loaded.dvh if wanted is None else loaded.dvh[loaded.dvh["patient_id"].astype(str).isin(wanted)]
        try:
            out.update(dvhs_from_table(table))
        except InputError as exc:
            log.warning("dvh.csv: %s; OAR limits from it are not checked", exc)
    images = loaded.images
    doses = images[images["modality"] == DOSE_MODALITY] if images is not None else None
    for rec in ([] if doses is None else doses.to_dict("records")):
        pid = str(rec["patient_id"])
        if wanted is not None and pid not in wanted:
            continue
        for item in dose_items(images, pid, str(rec["image"]), getattr(loaded, "structure_aliases", None)):
            try:
                dose, mask = dose_and_mask(item)
                out.setdefault(pid, {})[item.roi] = compute_dvh(dose, mask, structure=item.roi)
            except InputError as exc:
                log.warning("patient %s: no DVH of %s (%s); its OAR limits are not checked", pid, item.roi, exc)
    return out
