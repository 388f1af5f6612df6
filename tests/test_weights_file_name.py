"""The run's weights file is `ssl_weights.pth` (not a name that invites nnU-Net's -pretrained_weights); runs written
before the rename hold `pretrained_weights.pth`, which nnssl_export and nnssl_probe still read."""
from __future__ import annotations

from argparse import Namespace

import pytest

from nnssl_plugin.cli.export import _source_file
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.pretrained import OLD_WEIGHTS_FILE, WEIGHTS_FILE
from nnssl_plugin.probe.sources import run_file


def _run(tmp_path, *names):
    fold = tmp_path / "nnsslPretrainer_hier_1epochs__nnsslPretrainPlans__3d_cpu" / "fold_all"
    fold.mkdir(parents=True)
    for name in names:
        (fold / name).write_bytes(b"")
    return fold


def test_the_new_name_is_read_first_and_the_old_one_still_read(tmp_path):
    assert WEIGHTS_FILE == "ssl_weights.pth" and "pretrained" not in WEIGHTS_FILE
    both = _run(tmp_path / "a", WEIGHTS_FILE, OLD_WEIGHTS_FILE, "checkpoint_final.pth")
    old = _run(tmp_path / "b", OLD_WEIGHTS_FILE, "checkpoint_final.pth")
    for fold, expected in ((both, WEIGHTS_FILE), (old, OLD_WEIGHTS_FILE)):
        assert run_file(fold.parent) == fold / expected
        args = Namespace(checkpoint="final", run=str(fold.parent))
        assert _source_file(args, tmp_path) == fold / expected


def test_an_unfinished_run_names_the_latest_checkpoint(tmp_path):
    fold = _run(tmp_path, "checkpoint_latest.pth")
    with pytest.raises(NnsslError, match=f"{WEIGHTS_FILE} not found; the run has not finished: pass --checkpoint "
                                         "latest"):
        _source_file(Namespace(checkpoint="final", run=str(fold.parent)), tmp_path)
