"""The one file that nnUNet_extTrainer's folder holds: it re-exports the plugin's trainers by name.

nnU-Net imports every file of that folder as a top-level module and drops it afterwards, so the classes live in the
installed package and this shim only forwards name lookups (variant names are built on demand).
"""
from nnssl_plugin.nnunet_trainers.registry import __getattr__  # noqa: F401  (PEP 562: lookups go to the registry)
