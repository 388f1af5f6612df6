"""Data on nnU-Net's loaders: unlabelled preprocessing on the target's plans (`prepare`, with `jobs` for the worker
pool), the two-view sampler (`two_view`, an `nnUNetDataLoader`), each method family's views as its options
(`views`), and the per-view augmentations: the MoCo family's (`augment`), `hier`'s corruptions and the voxel2vec
baseline's (`local_augment`, `vox2vec_augment`)."""
