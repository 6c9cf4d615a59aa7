"""radiogenomics.features"""
