"""radiogenomics.serving"""
