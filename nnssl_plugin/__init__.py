"""nnssl_plugin: self-supervised pretraining for nnU-Net v2, on nnU-Net's own plans, loop and trainers."""
__version__ = "0.1.0"
