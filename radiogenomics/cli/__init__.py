"""radiogenomics.cli"""
