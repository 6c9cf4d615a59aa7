"""radiogenomics: personalised radiotherapy from imaging and genomics."""

__version__ = "0.1.0"
