"""Tensor functions, with no nnU-Net and no nn.Modules: exact ZCA whitening and running-moment algebra (`whitening`),
effective rank and singular spectrum (`rank`), aligned regions of two views (`regions`), voxel correspondences
across a U-Net's pyramid (`correspondence`), and gathering across DDP ranks with the gradient kept (`distributed`).
The lowest layer: docs/ARCHITECTURE.md, "Layers: what each may import"."""
