"""Pure tensor functions: ZCA whitening, effective rank and spectrum (more to come: correspondences, pooling)."""
