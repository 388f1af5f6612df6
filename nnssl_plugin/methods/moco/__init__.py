"""The MoCo family (moco, moco_zca): MoCo v2 (Chen et al. 2020, arXiv 2003.04297) and its ZCA-whitened variant
(Hassanpour et al. 2024, arXiv 2402.14611). Kept free of imports (see nnssl_plugin.methods)."""
