"""Packaging: every package folder is installed, under nnssl_plugin, and every console script resolves; the wheel
builds without warnings and ships the trainer shim; the tested nnU-Net range; LICENSE and CITATION.cff."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from nnssl_plugin.versions import NNUNET_REQUIREMENT, untested_nnunet_message

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _installed_name(folder: Path) -> str:
    relative = folder.relative_to(ROOT)
    top = relative.parts[0]
    prefix = "nnssl_plugin" if top == "nnssl_plugin" else f"nnssl_plugin.{top}"
    return ".".join([prefix, *relative.parts[1:]])


def test_every_package_folder_is_listed_in_pyproject():
    """Every folder holding Python files, the __init__-less trainer shim folder included (setuptools would
    otherwise warn that it 'would be ignored')."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {_installed_name(module.parent) for top in ("nnssl_plugin", "pretrain", "nnunet_trainers")
             for module in (ROOT / top).rglob("*.py") if "__pycache__" not in module.parts}
    assert found == listed


def test_the_shim_folder_holds_one_file_and_no_init():
    """nnU-Net imports every .py of an nnUNet_extTrainer folder as a top-level module."""
    assert [p.name for p in (ROOT / "nnunet_trainers" / "ext").glob("*.py")] == ["nnssl_plugin_trainer_shim.py"]


def test_wheel_builds_without_setuptools_warnings_and_ships_the_shim(tmp_path):
    """A wheel built from a copy of the sources (no build folder in the repository): the verbose build log has no
    'would be ignored' warning, and the wheel holds the shim, every package and the LICENSE."""
    pytest.importorskip("setuptools", minversion="77")
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("nnssl_plugin", "pretrain", "nnunet_trainers"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                             "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True,
                            env={**os.environ, "PIP_NO_INPUT": "1"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "would be ignored" not in log and "SetuptoolsDeprecationWarning" not in log
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "nnssl_plugin/nnunet_trainers/ext/nnssl_plugin_trainer_shim.py" in names
    assert "nnssl_plugin/nnunet_trainers/ext/__init__.py" not in names
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        assert any(n.startswith(package.replace(".", "/") + "/") for n in names), package
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_nnunet_dependency_is_the_tested_range():
    assert PYPROJECT["project"]["dependencies"] == [NNUNET_REQUIREMENT] == ["nnunetv2>=2.8.1,<2.9"]


@pytest.mark.parametrize("version", ["2.8.1", "2.8.4", "2.8.10.post1"])
def test_tested_nnunet_versions_are_silent(version):
    assert untested_nnunet_message(version) is None


@pytest.mark.parametrize("version", ["2.8.0", "2.9.0", "2.9rc1", "3.0", "unknown"])
def test_untested_nnunet_version_gets_one_line_naming_the_fix(version):
    message = untested_nnunet_message(version)
    assert "\n" not in message and f"nnunetv2 {version} is installed" in message
    assert message.endswith("pip install 'nnunetv2>=2.8.1,<2.9'")


def test_importing_the_plugin_under_an_untested_nnunet_warns_in_one_line(tmp_path):
    """A fake nnunetv2 2.9.0 distribution first on the path: import succeeds and stderr holds exactly the one
    line (the same happens for every CLI, which imports the plugin)."""
    info = tmp_path / "nnunetv2-2.9.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nnunetv2\nVersion: 2.9.0\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import nnssl_plugin"], capture_output=True, text=True, env=env)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [untested_nnunet_message("2.9.0")]
    silent = subprocess.run([sys.executable, "-c", "import nnssl_plugin"], capture_output=True, text=True)
    assert silent.returncode == 0 and silent.stderr == ""


def test_requires_python_is_what_the_tests_run_on():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)  # tomllib, imported above


def test_license_and_citation_files():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in license_text
    assert "Copyright 2026 the nnssl_plugin authors" in license_text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["title"] == "nnssl_plugin"
    assert citation["authors"] and citation["message"]
    papers = {ref["identifiers"][0]["value"]: [a["family-names"] for a in ref["authors"]]
              for ref in citation["references"]}
    assert papers == {"arXiv:2402.14611": ["Hassanpour", "Srivastav", "Mutter", "Padoy"],
                      "arXiv:2401.06473": ["Kats", "Hirsch", "Heinrich"]}
    assert all(ref["year"] == 2024 and "ISBI" in ref["collection-title"] for ref in citation["references"])


def test_top_level_folders_install_under_nnssl_plugin():
    assert importlib.import_module("nnssl_plugin.pretrain").__file__.endswith("pretrain/__init__.py")
    assert importlib.import_module("nnssl_plugin.nnunet_trainers").__file__.endswith("nnunet_trainers/__init__.py")


def test_every_console_script_resolves_to_a_callable():
    for name, target in PYPROJECT["project"]["scripts"].items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
