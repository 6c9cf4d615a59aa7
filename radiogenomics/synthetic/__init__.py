"""radiogenomics.synthetic"""
