"""nnssl_plugin: self-supervised pretraining for nnU-Net v2, on nnU-Net's own plans, loop and trainers."""
from nnssl_plugin.versions import warn_if_untested_nnunet

__version__ = "0.1.0"

warn_if_untested_nnunet()  # one line on stderr when the installed nnunetv2 is outside the tested range
