"""One patient's images and label maps, each decoded once per extraction task (radiomics, deep and dose items).

Its own module so that an item kind importing it (the deep path) does not import the other kinds' code: the
feature cache keys follow each kind's imports (:mod:`radiogenomics.features.provenance`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class PatientReader:
    """Images and label maps of one patient's task, each decoded once (the CT serves its radiomics, deep and
    dose items; one label map serves every ROI) and released when the task ends, so a worker holds one
    patient's images at a time.

    Binary masks of label-map ROIs are cut from the decoded map here; everything else (RTSTRUCT rasterisation,
    geometry mismatches, empty ROIs and their messages) goes through :func:`radiogenomics.cohort.read_mask`.
    """

    def __init__(self) -> None:
        self._images: dict[str, Any] = {}

    def image(self, path: str) -> Any:
        """:func:`radiogenomics.cohort.read_image`, once per path for this reader."""
        if path not in self._images:
            from radiogenomics.cohort import read_image as _read

            self._images[path] = _read(path)
        return self._images[path]

    def mask(self, path: str, reference_path: str, roi: str, label: int, *, patient_id: str,
             structure: str = "", aliases: tuple[str, ...] = ()) -> Any:
        """The binary (UInt8 0/1) mask of one ROI on the grid of the image at ``reference_path``."""
        import numpy as np
        import SimpleITK as sitk

        from radiogenomics.cohort import geometry_differences, read_mask
        from radiogenomics.cohort.dicom import is_dicom_file
        from radiogenomics.cohort.imageio import label_of_name

        reference = self.image(reference_path)
        if os.path.isfile(path) and not is_dicom_file(Path(path)):  # a label map: decoded once, one ROI cut per call
            labels = self.image(path)
            if not geometry_differences(labels, reference):
                value = label_of_name(labels, structure, Path(path), patient_id) if structure else label
                binary = sitk.GetArrayViewFromImage(labels) == value
                if binary.any():
                    mask = sitk.GetImageFromArray(binary.view(np.uint8))
                    mask.CopyInformation(reference)
                    return mask
        return read_mask(path, reference, roi, label, reference_path=reference_path, patient_id=patient_id,
                         structure=structure or None, aliases=aliases)
