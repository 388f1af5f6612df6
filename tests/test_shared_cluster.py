"""Safe on a shared cluster: the run-folder lock between two real processes, per-process temp files, a full disk or
file-size limit met by real writes (no root, no mount: a child under RLIMIT_FSIZE gets a real EFBIG; a file object
raising ENOSPC stands for a full disk under torch.save), and loader workers that die with a SIGKILLed parent."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import FullDiskFile

from nnssl_plugin import run_lock
from nnssl_plugin.checkpoints import atomic_torch_save, save_checkpoint_file
from nnssl_plugin.errors import NnsslError

HOLD = textwrap.dedent("""
    import sys
    from nnssl_plugin import run_lock
    run_lock.acquire(sys.argv[1])
    print("held", flush=True)
    sys.stdin.readline()  # hold until the test says so
    run_lock.release(sys.argv[1])
""")


def _holder(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_process_is_refused_in_one_line_naming_the_holder(tmp_path):
    holder = _holder(tmp_path)
    try:
        second = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path)], capture_output=True, text=True,
                                input="")
        assert second.returncode != 0
        last = second.stderr.strip().splitlines()[-1]
        assert f"is being trained by another process (host {socket.gethostname()}, pid {holder.pid}, last wrote" \
            in last and "resume with --c" in last
    finally:
        holder.communicate("\n")
    assert not (tmp_path / run_lock.LOCK_NAME).exists(), "the holder removes its lock when it ends"


def test_a_lock_of_a_killed_process_on_this_host_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    holder.kill()
    holder.wait()
    lines = []
    run_lock.acquire(tmp_path, log=lines.append)
    assert run_lock.read_holder(tmp_path).pid == os.getpid()
    assert lines and f"pid {holder.pid}" in lines[0]
    run_lock.release(tmp_path)


def test_a_lock_from_another_host_waits_for_three_epochs_or_the_flag(tmp_path):
    record = {"host": "other-node", "pid": 4242, "start": None, "written": time.time() - 100, "epoch_seconds": 60}
    (tmp_path / run_lock.LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(NnsslError, match="locked by a run on another host \\(host other-node, pid 4242.*"
                                         "--take-over-lock with --c"):
        run_lock.acquire(tmp_path)
    run_lock.acquire(tmp_path, take_over=True, log=lambda line: None)
    assert run_lock.read_holder(tmp_path).pid == os.getpid()
    record["written"] = time.time() - 3 * 60 - 5  # older than 3 epochs' time: taken over without the flag
    (tmp_path / run_lock.LOCK_NAME).write_text(json.dumps(record))
    run_lock.acquire(tmp_path, log=lambda line: None)
    assert run_lock.read_holder(tmp_path).pid == os.getpid()


def test_a_save_removes_only_its_own_and_dead_processes_temp_files(tmp_path):
    holder = _holder(tmp_path)  # a live process of this host
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    live_tmp = tmp_path / f".checkpoint_latest.pth.{host}~{holder.pid}.abc.tmp"
    dead_tmp = tmp_path / f".checkpoint_latest.pth.{host}~{int(dead.stdout)}.def.tmp"
    for p in (live_tmp, dead_tmp):
        p.write_bytes(b"partial")
    try:
        save_checkpoint_file({"w": torch.zeros(2)}, tmp_path / "checkpoint_latest.pth")
        save_checkpoint_file({"w": torch.ones(2)}, tmp_path / "checkpoint_latest.pth")
        assert live_tmp.exists() and not dead_tmp.exists()
        assert (tmp_path / "checkpoint_previous.pth").is_file() and not list(tmp_path.glob("*.link"))
    finally:
        holder.communicate("\n")




    def flush(self):
        self.f.flush()

    def fileno(self):
        return self.f.fileno()


def test_enospc_inside_torch_save_is_one_line_naming_folder_and_space(tmp_path, monkeypatch):
    import nnssl_plugin.io_utils as io_utils

    real = io_utils.RecordingFile
    monkeypatch.setattr(io_utils, "RecordingFile", lambda f: real(FullDiskFile(f)))
    path = tmp_path / "checkpoint_latest.pth"
    with pytest.raises(NnsslError) as e:
        atomic_torch_save({"w": torch.zeros(100_000)}, path)
    assert str(e.value).startswith(f"cannot write {path}: no space left on device in {tmp_path} (")
    assert "about 390.6 kB needed); free space there" in str(e.value)
    assert list(tmp_path.iterdir()) == [], "no temp file is left"


EFBIG_CHILD = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead of failing the write
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    from nnssl_plugin.cli import {module} as cli
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_a_file_size_limit_met_by_a_real_export_write_is_one_line(tmp_path):
    """nnssl_export writes a ~6 MB weights file; under a 64 kB RLIMIT_FSIZE the write itself gets EFBIG."""
    env = {**os.environ, **{v: str(tmp_path / v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    child = subprocess.run([sys.executable, "-c", EFBIG_CHILD.replace("{module}", "export"), "--help"], env=env,
                           capture_output=True, text=True)
    assert child.returncode == 0  # the child starts under the limit
    script = EFBIG_CHILD.replace("{module}", "export").replace(
        "from nnssl_plugin.cli import export as cli",
        "from nnssl_plugin.checkpoints import atomic_torch_save\n"
        "import torch\n"
        "from nnssl_plugin.errors import cli_entry\n"
        "cli = type('c', (), {'main': staticmethod(cli_entry('nnssl_export')(lambda argv: "
        "atomic_torch_save({'w': torch.zeros(1 << 20)}, argv[0])))})")
    out = tmp_path / "weights.pth"
    child = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    lines = child.stderr.strip().splitlines()
    assert child.returncode == 1 and len(lines) == 1, child.stderr
    assert lines[0].startswith(f"nnssl_export: error: cannot write {out}: file too large for the file-size limit "
                               f"(ulimit -f: 64.0 kB)") and "about 4.0 MB needed" in lines[0]
    assert list(tmp_path.iterdir()) == [], "no temp file is left"


WORKERS_CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    from batchgenerators.dataloading.data_loader import DataLoader
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from nnssl_plugin.stop_signals import StopSignals
    from nnssl_plugin.worker_death import arm_workers_of

    class Loader(DataLoader):
        def generate_train_batch(self):
            return {"data": np.zeros((1, 8), np.float32)}

    with StopSignals():  # the record-only handlers the workers inherit, as in a pretraining run
        loader = Loader(None, 1, 1, None, infinite=True)
        if sys.argv[1] == "armed":
            arm_workers_of(loader)
        augmenter = NonDetMultiThreadedAugmenter(loader, None, num_processes=2, num_cached=2, seeds=None)
        next(augmenter)
        children = open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()
        print(" ".join(children), flush=True)
        sys.stdin.readline()
""")


def _alive_pids(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("mode", ["armed", "unarmed"])
def test_loader_workers_die_with_a_sigkilled_parent(mode):
    """`armed` (what the pretraining trainer does): no worker is left 5 s after kill -9 of the main process.
    `unarmed` shows the test can see the failure: the workers outlive the parent (then the test kills them)."""
    parent = subprocess.Popen([sys.executable, "-c", WORKERS_CHILD, mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive_pids(workers) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling with a deadline
    left = _alive_pids(workers)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == ([] if mode == "armed" else workers)


def test_the_same_command_over_a_trained_run_names_c_and_how_to_start_over(tmp_path):
    from nnssl_plugin.cli.pretrain import refuse_silent_restart

    refuse_silent_restart(tmp_path, continue_training=False)  # an empty folder: a fresh run
    (tmp_path / "checkpoint_latest.pth").write_bytes(b"x")
    with pytest.raises(NnsslError, match=r"already holds an interrupted run \(checkpoint_latest.pth\)"):
        refuse_silent_restart(tmp_path, continue_training=False)
    (tmp_path / "checkpoint_final.pth").write_bytes(b"x")
    with pytest.raises(NnsslError, match=r"already holds a finished run \(checkpoint_final.pth\); continue it with "
                                         r"--c, or start over by removing that folder"):
        refuse_silent_restart(tmp_path, continue_training=False)
    refuse_silent_restart(tmp_path, continue_training=True)


def test_each_resume_keeps_its_own_settings_in_the_run_record(tmp_path):
    from nnssl_plugin.config import default_recipe
    from nnssl_plugin.run_record import read_run_record, write_run_record

    recipe = default_recipe("moco")
    write_run_record(tmp_path, recipe, None, {}, "amp", 1, session={"continued": False, "started": "t0"})
    write_run_record(tmp_path, recipe, None, {}, "bf16", 5, session={"continued": True, "started": "t1"})
    write_run_record(tmp_path, recipe, None, {}, "bf16", 5)  # the trainer's own rewrite keeps the list
    record = read_run_record(tmp_path)
    assert (record["precision"], record["save_every"]) == ("bf16", 5)
    assert record["sessions"] == [{"continued": False, "started": "t0", "precision": "amp", "save_every": 1},
                                  {"continued": True, "started": "t1", "precision": "bf16", "save_every": 5}]
    write_run_record(tmp_path, recipe, None, {}, "amp", 1, session={"continued": False, "started": "t2"})
    assert len(read_run_record(tmp_path)["sessions"]) == 1, "a fresh start begins a new list"
