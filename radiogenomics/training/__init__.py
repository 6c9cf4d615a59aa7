"""radiogenomics.training"""
