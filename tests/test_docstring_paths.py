"""Every path a docstring or comment of the library cites (tests/…py, docs/…md, nnssl_plugin/…py, and the package's
own `<folder>/<file>.py` mentions) names a file that exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nnssl_plugin"
FILES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "pretrain").rglob("*.py"), *(ROOT / "nnunet_trainers").rglob("*.py")])
CITED = re.compile(r"(?<![\w/.])((?:tests|docs|nnssl_plugin|pretrain|nnunet_trainers|modules|methods|ops|losses|data|"
                   r"probe|cli|datasets)/[\w/]+\.(?:py|md))")


def _exists(cited: str) -> bool:
    """A path from the repository root, or one relative to the package (`modules/x.py`, `methods/moco/y.py`)."""
    if (ROOT / cited).is_file() or (PACKAGE / cited).is_file():
        return True
    return "<" in cited  # a pattern such as methods/<family>/config.py


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_cited_path_exists(path):
    missing = sorted({c for c in CITED.findall(path.read_text()) if not _exists(c)})
    assert not missing, f"{path.relative_to(ROOT)} cites {missing}, which do not exist"
