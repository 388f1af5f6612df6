"""Packaging: every package folder is installed, under nnssl_plugin, and every console script resolves."""
from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _installed_name(folder: Path) -> str:
    relative = folder.relative_to(ROOT)
    top = relative.parts[0]
    prefix = "nnssl_plugin" if top == "nnssl_plugin" else f"nnssl_plugin.{top}"
    return ".".join([prefix, *relative.parts[1:]])


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {_installed_name(init.parent) for top in ("nnssl_plugin", "pretrain", "nnunet_trainers")
             for init in (ROOT / top).rglob("__init__.py")}
    assert found == listed


def test_top_level_folders_install_under_nnssl_plugin():
    assert importlib.import_module("nnssl_plugin.pretrain").__file__.endswith("pretrain/__init__.py")
    assert importlib.import_module("nnssl_plugin.nnunet_trainers").__file__.endswith("nnunet_trainers/__init__.py")


def test_every_console_script_resolves_to_a_callable():
    for name, target in PYPROJECT["project"]["scripts"].items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
