"""The hierarchical dense family (hier, voxel2vec): Kats et al. 2024 (arXiv 2401.06473); vox2vec (Goncharov et al.
2023, arXiv 2307.14725). Kept free of imports (see nnssl_plugin.methods)."""
