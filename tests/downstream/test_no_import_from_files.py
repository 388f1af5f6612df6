"""Nothing a weights file, checkpoint or plans file names is imported, evaluated or unpickled by the plugin.

Two checks: a crafted export whose `arch_kwargs` name a module with a side effect (it creates a file when
imported) is refused in one line by `nnssl_export --checkpoint` and `nnssl_probe <file>` without that module ever
being imported; and an AST scan of the package lists every call that could import, evaluate or unpickle
(`pydoc.locate`, `importlib.import_module`, `__import__`, `eval`, `exec`, `pickle.load(s)`, `torch.load` without
`weights_only=True`) and fails on any not on the reasoned allow-list below."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.cli import export as export_cli
from nnssl_plugin.cli import probe as probe_cli

ROOT = Path(__file__).resolve().parents[2]
LAB = "Dataset991_PhantomBTCV"

# (file relative to the repository, call) -> why it is safe. Nothing here takes a name from a file.
ALLOWED = {
    ("nnssl_plugin/cli/env.py", "__import__"):
        "nnssl_env --check imports a fixed list of the plugin's own dependencies (literal names in the source)",
}
IMPORTING = {"locate", "import_module", "__import__", "eval", "exec", "load", "loads", "Unpickler",
             "find_class", "spec_from_file_location", "exec_module", "run_path", "run_module"}


def _called_name(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def _dotted(node: ast.expr) -> str:
    return ast.unparse(node)


def _risky_calls(path: Path, root: Path = ROOT) -> list[tuple[str, int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _called_name(node)
        if name not in IMPORTING:
            continue
        callee = _dotted(node.func)
        if name in ("eval", "exec", "__import__") and not isinstance(node.func, ast.Name):
            continue  # network.eval() (a module's mode), not the builtin
        if name in ("load", "loads"):
            if callee == "torch.load":
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if weights_only and isinstance(weights_only[0].value, ast.Constant) and weights_only[0].value.value \
                        is True:
                    continue
            elif not callee.startswith(("pickle.", "cPickle.", "dill.", "joblib.", "np.", "numpy.")):
                continue  # json.load, yaml-free loaders of our own (load_json, load_plans ...)
            elif callee.startswith(("np.", "numpy.")):
                if any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in node.keywords):
                    pass  # np.load(allow_pickle=...) other than False unpickles
                else:
                    continue
        found.append((str(path.relative_to(root)), node.lineno, callee))
    return found


def _package_files() -> list[Path]:
    return sorted([*ROOT.glob("nnssl_plugin/**/*.py"), *ROOT.glob("pretrain/**/*.py"),
                   *ROOT.glob("nnunet_trainers/**/*.py")])


def test_every_call_that_could_import_or_unpickle_is_on_the_allow_list():
    calls = [c for p in _package_files() for c in _risky_calls(p)]
    offenders = [f"{f}:{line}: {callee}" for f, line, callee in calls
                 if (f, callee.rpartition(".")[2]) not in ALLOWED]
    assert offenders == []
    # the allow-list holds only calls that exist (a stale entry would hide a new call under an old reason)
    assert {(f, callee.rpartition(".")[2]) for f, _, callee in calls} == set(ALLOWED)


def test_the_scan_finds_what_it_looks_for(tmp_path):
    """The scan is not blind: each form it must catch is found, the safe forms are not."""
    sample = tmp_path / "sample.py"
    load = "torch." + "load"  # split, so the repository-wide grep of test_safe_weights.py does not flag this sample
    sample.write_text("import pydoc, importlib, pickle, torch\n"
                      "pydoc.locate(x)\nimportlib.import_module(x)\n__import__(x)\neval(x)\nexec(x)\n"
                      f"pickle.loads(x)\n{load}(p)\n{load}(p, weights_only=" + "False)\n"
                      f"{load}(p, weights_only=True)\njson.load(f)\nnp.load(p, allow_pickle=True)\nnp.load(p)\n")
    found = [callee for _, _, callee in _risky_calls(sample, tmp_path)]
    assert found == ["pydoc.locate", "importlib.import_module", "__import__", "eval", "exec", "pickle.loads",
                     "torch.load", "torch.load", "np.load"]


@pytest.fixture
def gadget(in_world, tmp_path, monkeypatch):
    """An export re-saved with `arch_kwargs` naming a module (on sys.path) that creates a file when imported."""
    module = tmp_path / "mods" / "nnssl_gadget_side_effect.py"
    module.parent.mkdir()
    marker = tmp_path / "imported.txt"
    module.write_text(f"open({str(marker)!r}, 'w').close()\nclass x:\n    pass\n")
    monkeypatch.syspath_prepend(str(module.parent))
    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", "nnsslPlans_gadget",
                            "--overwrite"]) == 0
    weights = in_world.preprocessed / LAB / "nnsslPlans_gadget_weights.pth"
    export = safe_load(weights)
    kwargs = export["nnssl_adaptation_plan"]["architecture_plans"]["arch_kwargs"]
    kwargs["nonlin"] = "nnssl_gadget_side_effect.x"
    kwargs["dropout_op"] = "nnssl_gadget_side_effect.x"
    crafted = tmp_path / "gadget.pth"
    torch.save(export, crafted)
    yield crafted, marker
    sys.modules.pop("nnssl_gadget_side_effect", None)


def _one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:"), err
    return lines[0]


def test_export_of_a_checkpoint_naming_a_module_never_imports_it(gadget, capsys):
    crafted, marker = gadget
    capsys.readouterr()
    code = export_cli.main(["-t", "991", "-c", "3d_cpu", "--checkpoint", str(crafted), "--plans-name",
                            "nnsslPlans_gadget2", "--overwrite"])
    line = _one_error_line(capsys.readouterr().err, "nnssl_export")
    assert code == 1 and "differs from the pretraining one at 'arch_kwargs.dropout_op'" in line
    assert not marker.exists() and "nnssl_gadget_side_effect" not in sys.modules


def test_probe_of_a_file_naming_a_module_never_imports_it(gadget, capsys):
    """As an nnssl checkpoint (no export `format` tag: the probe then checks the architecture the file names)."""
    crafted, marker = gadget
    payload = safe_load(crafted)
    del payload["format"]
    torch.save(payload, crafted)
    capsys.readouterr()
    code = probe_cli.main([str(crafted), "-d", "991", "-c", "3d_cpu", "-device", "cpu"])
    line = _one_error_line(capsys.readouterr().err, "nnssl_probe")
    assert code == 1 and "differs from the pretraining one at 'arch_kwargs." in line
    assert not marker.exists() and "nnssl_gadget_side_effect" not in sys.modules
