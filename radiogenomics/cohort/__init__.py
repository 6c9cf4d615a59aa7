"""Cohort folder format v1: typed loading, image/mask/DICOM readers and the validator."""

from radiogenomics.cohort.geometry import geometry_differences, same_geometry, voxel_volume_cc
from radiogenomics.cohort.imageio import read_image, read_mask
from radiogenomics.cohort.loader import Cohort, DeliveredCourse, load_cohort
from radiogenomics.cohort.problems import Problem
from radiogenomics.cohort.validate import ValidationReport, validate_cohort

__all__ = [
    "Cohort", "DeliveredCourse", "Problem", "ValidationReport", "geometry_differences", "load_cohort", "read_image",
    "read_mask", "same_geometry", "validate_cohort", "voxel_volume_cc",
]
