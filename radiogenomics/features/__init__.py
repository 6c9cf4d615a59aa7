"""Feature pipeline: cohort folder -> one fused, namespaced feature table (see docs/features.md).

Modules: ``radiomics_extraction`` (pyradiomics per image/mask, shipped ``params/``), ``ibsi`` (IBSI 1 phantom
comparison), ``deep`` (MONAI encoder embeddings), ``genomic`` (RSI and signatures in ``data/``),
``dosimetric`` (DVH metrics), ``harmonisation`` (ComBat transformer), ``fusion`` (wide table and data
dictionary), ``naming`` (column names), ``cache`` / ``uptodate`` (content addressing), ``tasks`` / ``runner``
(work items, process pool, Dask) and ``pipeline`` (``extract``, used by ``radiogenomics extract``).
"""
