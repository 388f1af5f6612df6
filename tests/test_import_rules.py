"""docs/ARCHITECTURE.md's import rules, read from the code's import statements (module- and function-level), per
layer and per file role inside the family folders; and no trainer-side file lists a family's loss terms or keys."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nnssl_plugin.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nnssl_plugin"
LIBRARY = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "pretrain").rglob("*.py"), *(ROOT / "nnunet_trainers").rglob("*.py")])
NNUNET = ("nnunetv2", "batchgenerators", "batchgeneratorsv2", "acvl_utils", "dynamic_network_architectures")


def imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved against the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _files(*patterns: str) -> list[Path]:
    return sorted({p for pattern in patterns for p in ROOT.glob(pattern)})


TENSOR_CORE = _files("nnssl_plugin/ops/*.py", "nnssl_plugin/losses/*.py", "nnssl_plugin/modules/*.py",
                     "nnssl_plugin/methods/*/network.py", "nnssl_plugin/methods/*/queue.py",
                     "nnssl_plugin/methods/family.py")
FOUNDATION_CONFIGS = _files("nnssl_plugin/methods/*/config.py", "nnssl_plugin/methods/__init__.py",
                            "nnssl_plugin/methods/*/__init__.py", "nnssl_plugin/config.py", "nnssl_plugin/recipe.py")


@pytest.mark.parametrize("path", TENSOR_CORE, ids=rel)
def test_tensor_core_and_family_networks_import_no_nnunet(path):
    """ops, losses, modules, a family's network (and its queue) and the Family object: handed a built U-Net."""
    assert TENSOR_CORE
    bad = sorted(n for n in imports(path) if n.split(".")[0] in NNUNET)
    assert not bad, f"{rel(path)} imports {bad}"


@pytest.mark.parametrize("path", FOUNDATION_CONFIGS, ids=rel)
def test_configs_and_recipes_import_no_torch_and_no_nnunet(path):
    """A family's config is read by the foundation layer (trainer names, the run record) without torch modules."""
    bad = sorted(n for n in imports(path) if n.split(".")[0] in ("torch", *NNUNET))
    assert not bad, f"{rel(path)} imports {bad}"
    inside = sorted(n for n in imports(path) if n.startswith("nnssl_plugin.") and not
                    n.startswith(("nnssl_plugin.methods", "nnssl_plugin.recipe", "nnssl_plugin.config")))
    assert not inside, f"{rel(path)} imports {inside}"


@pytest.mark.parametrize("path", [p for p in LIBRARY if p.is_relative_to(PACKAGE)], ids=rel)
def test_the_library_never_imports_commands_or_trainers(path):
    if path.is_relative_to(PACKAGE / "cli"):
        return
    roots = ("nnssl_plugin.cli", "nnssl_plugin.pretrain", "nnssl_plugin.nnunet_trainers")
    bad = sorted(n for n in imports(path) if n in roots or n.startswith(tuple(f"{r}." for r in roots)))
    assert not bad, f"{rel(path)} imports {bad}"


@pytest.mark.parametrize("path", LIBRARY, ids=rel)
def test_only_the_family_list_and_the_config_list_reach_into_a_family_folder(path):
    """Everything else reads a family through its Family object (nnssl_plugin.families)."""
    if path.is_relative_to(PACKAGE / "methods") or rel(path) in ("nnssl_plugin/families.py", "nnssl_plugin/config.py"):
        return
    bad = sorted(n for n in imports(path) if n.startswith("nnssl_plugin.methods."))
    assert not bad, f"{rel(path)} imports {bad}"


@pytest.mark.parametrize("path", _files("nnssl_plugin/data/*.py"), ids=rel)
def test_data_and_modules_do_not_import_each_other(path):
    assert not [n for n in imports(path) if n.startswith("nnssl_plugin.modules")]


@pytest.mark.parametrize("path", _files("nnssl_plugin/modules/*.py"), ids=rel)
def test_modules_import_no_data(path):
    assert not [n for n in imports(path) if n.startswith("nnssl_plugin.data")]


def test_no_file_outside_a_family_folder_names_a_familys_loss_terms_or_batch_keys():
    """The trainer, the log and the plots read Family.loss_terms / batch_keys; nobody else lists them."""
    owned = {term for f in FAMILIES.values() for term in f.loss_terms}
    owned |= {key for f in FAMILIES.values() for key in f.batch_keys} - {"view1", "view2"}  # every family's views
    readers = [ROOT / "pretrain" / "trainer.py", PACKAGE / "ssl_logging.py", PACKAGE / "plots.py",
               PACKAGE / "heldout.py", PACKAGE / "families.py"]
    for path in readers:
        text = path.read_text()
        found = sorted(name for name in owned if f'"{name}"' in text or f"'{name}'" in text)
        assert not found, f"{rel(path)} names {found}"


@pytest.mark.parametrize("path", LIBRARY, ids=rel)
def test_only_the_ddp_helpers_import_torch_distributed(path):
    """One home for the DDP helpers: everything else calls nnssl_plugin.ops.distributed."""
    if rel(path) == "nnssl_plugin/ops/distributed.py":
        return
    bad = sorted(n for n in imports(path) if n == "torch.distributed" or n.startswith("torch.distributed."))
    assert not bad, f"{rel(path)} imports {bad}"
