"""The columns an extraction defines, whether or not any patient produced them.

A (kind, modality, ROI) whose items all failed leaves no columns in :func:`fusion.item_frame`; the feature
table must still have them (NaN), so that its column set depends on the cohort's images.csv and the
extraction parameters, not on which patients succeeded. The feature names of such a group come from:

* radiomics: pyradiomics run with the same parameters on a small synthetic phantom (the key set of an
  extractor depends on its parameters only, not on the image);
* deep: the encoder's embedding size (``DeepConfig.embedding_dim``);
* dose: :func:`radiogenomics.features.dosimetric.metric_names`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from radiogenomics.features import naming
from radiogenomics.features.tasks import DEEP, DOSE, RADIOMICS, ItemResult, WorkItem

_PHANTOM_SIZE = 24  # voxels per side, 1 mm spacing
_PHANTOM_ROI = slice(6, 18)  # a 12 mm cube


@lru_cache(maxsize=16)
def radiomics_keys(params_json: str) -> tuple[str, ...]:
    """pyradiomics keys (``original_firstorder_Mean``, ...) that these parameters produce, in output order."""
    import SimpleITK as sitk

    from radiogenomics.features.radiomics_extraction import extract_radiomics

    rng = np.random.default_rng(0)
    voxels = rng.uniform(1.0, 10.0, size=(_PHANTOM_SIZE,) * 3)
    labels = np.zeros(voxels.shape, dtype=np.uint8)
    labels[_PHANTOM_ROI, _PHANTOM_ROI, _PHANTOM_ROI] = 1
    params = json.loads(params_json)
    label = int(params.get("setting", {}).get("label", 1))
    image, mask = sitk.GetImageFromArray(voxels), sitk.GetImageFromArray(labels * label)
    return tuple(extract_radiomics(image, mask, params))


def item_keys(item: WorkItem) -> tuple[str, ...]:
    """The feature keys an item of this kind and parameters produces (as in ``ItemResult.features``)."""
    if item.kind == RADIOMICS:
        from radiogenomics.features.radiomics_extraction import canonical_json

        return radiomics_keys(canonical_json(item.params))
    if item.kind == DEEP:
        from radiogenomics.features.deep import DeepConfig

        return tuple(str(i) for i in range(DeepConfig.from_params(item.params).embedding_dim))
    if item.kind == DOSE:
        from radiogenomics.features.dosimetric import metric_names

        return tuple(f"{naming.structure_slug(item.roi)}.{m}" for m in metric_names())
    raise ValueError(f"unknown item kind {item.kind!r}")


def unproduced_columns(results: Sequence[ItemResult]) -> pd.DataFrame:
    """All-NaN columns (no rows) for every (kind, modality, ROI) none of whose items produced features."""
    from radiogenomics.features.fusion import column_names

    produced = {(r.item.kind, r.item.modality, r.item.roi) for r in results if r.status != "failed" and r.features}
    columns: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for r in results:
        group = (r.item.kind, r.item.modality, r.item.roi)
        if group in produced or group in seen:
            continue
        seen.add(group)
        columns += column_names(r.item.kind, r.item.modality, r.item.roi, item_keys(r.item), r.item.item_id)
    frame = pd.DataFrame(columns=columns, dtype=np.float64)
    frame.index.name = naming.PATIENT_ID
    return frame
