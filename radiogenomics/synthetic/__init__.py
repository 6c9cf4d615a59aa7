"""Synthetic head-and-neck radiogenomics cohorts from a documented mechanistic model.

``generate_cohort(out_dir, n_patients, seed, grid_size=64, workers=1, progress=None)`` writes a cohort folder
(format v1) plus ``truth.csv``; see ``docs/synthetic-cohort.md`` for the model and its sources.
"""

from radiogenomics.synthetic.generate import generate_cohort
from radiogenomics.synthetic.model import SynthParameters

__all__ = ["SynthParameters", "generate_cohort"]
