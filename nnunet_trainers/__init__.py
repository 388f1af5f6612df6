"""Downstream nnU-Net trainers (installed as nnssl_plugin.nnunet_trainers)."""
