"""radiogenomics.models"""
