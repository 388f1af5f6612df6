"""nnssl_prepare at scale: finished cases survive a kill and a dead worker, and the same command resumes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

from nnssl_plugin.cli import prepare as prepare_cli
from nnssl_plugin.data import prepare as prepare_module
from nnssl_plugin.data.jobs import WorkerDied, run_jobs
from nnssl_plugin.data.prepare import CASE_DONE

UNL = "Dataset990_PhantomUnlabelled"
DYING_CASE = "phantom_003"


def _square_or_die(x: int) -> int:
    if x == 3:
        os._exit(1)  # a worker killed from outside (out of memory) ends like this: no exception reaches the pool
    return x * x


def _dying_preprocess(identifier, *args):
    """The real worker, except that the process running it dies on DYING_CASE (importable by spawned workers)."""
    if identifier == DYING_CASE:
        os._exit(1)
    return prepare_module._preprocess_case(identifier, *args)


def test_jobs_hand_over_every_result_in_process_and_in_workers():
    for processes in (1, 2):
        got = []
        run_jobs(pow, [(x, 2) for x in range(7)], processes, got.append)
        assert sorted(got) == [x * x for x in range(7)]


def test_a_dead_worker_is_one_exception_counting_what_was_handed_over():
    got = []
    with pytest.raises(WorkerDied) as caught:
        run_jobs(_square_or_die, [(x,) for x in range(8)], 2, got.append)
    assert caught.value.finished == len(got) and caught.value.total == 8
    assert 9 not in got and set(got) <= {x * x for x in range(8)}


def _arrays(folder):
    dataset = infer_dataset_class(str(folder))(str(folder))
    return {case: np.asarray(dataset.load_case(case)[0]) for case in sorted(dataset.identifiers)}


_KILL_AFTER = """
import os, sys
import nnssl_plugin.data.prepare as prepare
real, calls = prepare._preprocess_case, []
def counting(*args):
    out = real(*args)
    calls.append(args[0])
    if len(calls) == int(sys.argv[1]):
        os._exit(9)  # killed right after this case's files and marker were written
    return out
prepare._preprocess_case = counting
from nnssl_plugin.cli.prepare import main
sys.exit(main(sys.argv[2:]))
"""


def test_prepare_killed_after_two_cases_resumes_with_the_rest_and_equals_a_whole_run(in_world, capsys):
    argv = ["-d", "990", "-t", "991", "--plans-name", "nnsslResumeKill", "-np", "1"]
    killed = subprocess.run([sys.executable, "-c", _KILL_AFTER, "2", *argv], env=in_world.env, capture_output=True,
                            text=True)
    assert killed.returncode == 9, killed.stderr[-2000:]
    root = in_world.preprocessed / UNL
    staging = root / ".nnsslResumeKill_3d_fullres.partial"
    assert len(list(staging.glob(f"*{CASE_DONE}"))) == 2 and not (root / "nnsslResumeKill.json").exists()

    assert prepare_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "resuming: 2 of 6 case(s) already preprocessed" in out and "preprocessing 4 case(s)" in out
    assert not staging.exists() and (root / "nnsslResumeKill.json").is_file()
    final = root / "nnsslResumeKill_3d_fullres"
    assert not list(final.glob(f"*{CASE_DONE}")) and not (final / "nnssl_prepare_state.json").exists()
    whole, resumed = _arrays(root / "nnsslPretrainPlans_3d_fullres"), _arrays(final)
    assert whole.keys() == resumed.keys() and all(np.array_equal(whole[c], resumed[c]) for c in whole)
    fingerprint = json.loads((root / "dataset_fingerprint.json").read_text())
    assert len(fingerprint["spacings"]) == 6


def test_a_dead_worker_is_one_line_naming_np_and_memory_and_the_rerun_resumes(in_world, capsys, monkeypatch):
    argv = ["-d", "990", "-t", "991", "--plans-name", "nnsslResumeDead", "-np", "2"]
    with monkeypatch.context() as patch:
        patch.setattr(prepare_module, "_preprocess_case", _dying_preprocess)
        assert prepare_cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "a worker process died" in err and "out of memory" in err and "-np 1" in err and "resume" in err
    root = in_world.preprocessed / UNL
    kept = len(list((root / ".nnsslResumeDead_3d_fullres.partial").glob(f"*{CASE_DONE}")))
    assert f"the {kept} finished case(s) are kept" in err and not (root / "nnsslResumeDead.json").exists()

    assert prepare_cli.main(argv[:-1] + ["1"]) == 0
    out = capsys.readouterr().out
    assert (f"resuming: {kept} of 6" in out) == (kept > 0) and f"preprocessing {6 - kept} case(s)" in out
    assert len(infer_dataset_class(str(p := root / "nnsslResumeDead_3d_fullres"))(str(p)).identifiers) == 6


def test_a_staging_folder_of_other_plans_is_started_over(in_world, capsys):
    root = in_world.preprocessed / UNL
    staging = root / ".nnsslResumeOther_3d_fullres.partial"
    staging.mkdir(parents=True)
    (staging / "nnssl_prepare_state.json").write_text(json.dumps({"configuration": "3d_fullres",
                                                                  "plans_sha256": "0" * 64}))
    (staging / f"phantom_000{CASE_DONE}").write_text("{}")
    assert prepare_cli.main(["-d", "990", "-t", "991", "--plans-name", "nnsslResumeOther", "-np", "1"]) == 0
    out = capsys.readouterr().out
    assert "starting over" in out and "preprocessing 6 case(s)" in out and not staging.exists()
