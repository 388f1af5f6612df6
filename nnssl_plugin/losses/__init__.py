"""One loss per file, each a function over tensors (equation and paper in its docstring): MoCo InfoNCE against the
queue (`moco`), moco_zca's aligned local region loss (`local`), voxel NT-Xent with negatives across DDP ranks
(`voxel`), and `hier`'s restoration MSE on a fixed intensity scale (`restoration`)."""
