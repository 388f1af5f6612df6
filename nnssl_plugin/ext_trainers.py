"""Where nnUNet_extTrainer must point for nnU-Net to find the plugin's trainers (docs/ARCHITECTURE.md, "How trainers
are found")."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def ext_trainer_folder() -> Path:
    """The folder holding only the plugin's shim file (installed with nnssl_plugin.nnunet_trainers). Found by
    name without importing the trainers: the core never imports the trainer layer."""
    spec = importlib.util.find_spec("nnssl_plugin.nnunet_trainers")
    return Path(spec.submodule_search_locations[0]) / "ext"


def with_ext_trainer_folder(value: str | None) -> str:
    """nnUNet_extTrainer's value with our folder appended (the user's own folders are kept, and searched first)."""
    ours = str(ext_trainer_folder())
    parts = [p for p in (value or "").split(os.pathsep) if p]
    return os.pathsep.join(parts if ours in parts else [*parts, ours])
