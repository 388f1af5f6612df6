"""Downstream nnU-Net trainers (installed as nnssl_plugin.nnunet_trainers): `nnUNetTrainerSSLInit`, `...SSLScratch`,
`...SSLFrozenEncoder`, `...SSLLinear` (`ssl_trainers`), the registry of every trainer name of the plugin
(`registry`), and `ext/`, the one-file folder nnUNet_extTrainer points at (docs/ARCHITECTURE.md, "How trainers are
found")."""
