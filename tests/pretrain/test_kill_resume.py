"""Kill -9 a pretraining run and a fine-tuning run at an exact point, resume with --c: nothing is lost but the
iterations since the last checkpoint, and pretraining (CPU, nnUNet_n_proc_DA=0, same machine and thread count) ends
with exactly the weights of an uninterrupted run with the same seed.

The run kills itself (SIGKILL to its own pid) at a chosen point instead of a poller killing it whenever it happens to
see a log line: a polled kill lands wherever a loaded machine let the run get to (mid-epoch, mid-checkpoint-write or
after a later checkpoint), so the test was a different test on every run. The kill points are test-only patches in a
`python -c` launcher; the production CLIs and nnU-Net's real `run_training` path run unchanged."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.ext_trainers import with_ext_trainer_folder

BIN = Path(sys.executable).parent  # console scripts of the venv running the tests

UNL, LAB = "Dataset990_PhantomUnlabelled", "Dataset991_PhantomBTCV"
PRETRAIN_ARGS = ["-d", "990", "-m", "moco", "-c", "3d_cpu", "-device", "cpu", "--epochs", "4", "--iters", "3",
                 "--seed", "7"]
PRETRAIN_FOLD = Path(UNL) / "nnsslPretrainer_moco_4epochs_3iters_seed7__nnsslPretrainPlans__3d_cpu" / "fold_all"
KILL_EPOCH = 2  # 4 epochs, a checkpoint after each but the last: checkpoints after epochs 0 and 1 exist then

# Test-only launcher: patch one kill point, then run the real entry (nnssl_pretrain's main, or nnUNetv2_train's
# run_training_entry with sys.argv set). spec: {"at": "step"|"write", "epoch", "step", "module", "cls", "entry", "argv"}
_KILLER = r'''
import json, os, signal, sys
spec = json.loads(sys.argv[1])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if spec["at"] in ("step", "signal"):  # right after optimiser step `step` (1-based) of epoch `epoch`
    from importlib import import_module
    cls = getattr(import_module(spec["module"]), spec["cls"])
    original_step, done = cls.train_step, []

    def train_step(self, batch):
        out = original_step(self, batch)
        done.append(self.current_epoch)
        if self.current_epoch == spec["epoch"] and done.count(spec["epoch"]) == spec["step"]:
            if spec["at"] == "step":
                die()
            os.kill(os.getpid(), getattr(signal, spec["signal"]))  # as a scheduler would: the run stops itself
        return out

    cls.train_step = train_step
else:  # "write": the checkpoint written at the end of epoch `epoch`, killed with half of it in the temp file
    import io
    import torch
    import nnssl_plugin.checkpoints as checkpoints
    original_save = checkpoints.atomic_torch_save

    def atomic_torch_save(obj, path):
        if os.path.basename(path) == "checkpoint_latest.pth" and obj["current_epoch"] == spec["epoch"] + 1:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            data = buffer.getvalue()

            def half_then_die(f):
                f.write(data[: len(data) // 2])
                f.flush()
                die()

            checkpoints.atomic_write(path, half_then_die)
        original_save(obj, path)

    checkpoints.atomic_torch_save = atomic_torch_save

if spec["entry"] == "nnssl_pretrain":
    from nnssl_plugin.cli.pretrain import main
    sys.exit(main(spec["argv"]))
sys.argv = [spec["entry"], *spec["argv"]]
from nnunetv2.run.run_training import run_training_entry
run_training_entry()
'''


def _env(world, results):
    return {**world.env, "nnUNet_results": str(results), "nnUNet_extTrainer": with_ext_trainer_folder(None)}


def _run_killed(spec: dict, env: dict, code: int = -signal.SIGKILL) -> subprocess.CompletedProcess:
    """Run the entry with the kill point of `spec`; it must end by that SIGKILL (not earlier, not by finishing), or
    with exit code `code`."""
    result = subprocess.run([sys.executable, "-c", _KILLER, json.dumps(spec)], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == code, \
        f"expected the run to kill itself at {spec['at']} (epoch {spec['epoch']}), found exit code " \
        f"{result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def _run(command, env):
    result = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


@pytest.mark.parametrize("value, expected", [("3", 3), ("1,1", 1), (None, "affinity")])
def test_cpu_threads_are_omp_num_threads_else_the_cpus_this_process_may_use(monkeypatch, value, expected):
    from nnssl_plugin.cli.pretrain import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    if value is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 5}, raising=False)  # 2 CPUs of a larger machine
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert cpu_threads() == (2 if expected == "affinity" else expected)


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_omp_num_threads_is_named(monkeypatch, value):
    from nnssl_plugin.cli.pretrain import cpu_threads
    from nnssl_plugin.errors import NnsslError

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(NnsslError, match=f"OMP_NUM_THREADS must be a positive integer, found '{value}'"):
        cpu_threads()


@pytest.fixture(scope="module")
def uninterrupted_weights(world, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The reference: the same pretraining run without a kill (shared by the kill points)."""
    results = tmp_path_factory.mktemp("whole")
    _run(["nnssl_pretrain", *PRETRAIN_ARGS], _env(world, results))
    return torch.load(results / PRETRAIN_FOLD / "ssl_weights.pth", weights_only=True)["network_weights"]


@pytest.mark.slow
@pytest.mark.parametrize("at", ["step", "write", "signal"], ids=["mid-epoch", "mid-checkpoint-write", "sigterm"])
def test_pretraining_killed_mid_epoch_resumes_to_the_uninterrupted_weights(world, tmp_path, uninterrupted_weights,
                                                                           at):
    """SIGKILL mid-epoch or mid-write; or SIGTERM (a scheduler's stop): the run stops by itself at the next step
    boundary with exit code 128 + 15 and one log line naming the resume point."""
    env = _env(world, tmp_path)
    fold = tmp_path / PRETRAIN_FOLD
    result = _run_killed({"at": at, "epoch": KILL_EPOCH, "step": 2, "module": "nnssl_plugin.pretrain.trainer",
                          "cls": "nnsslPretrainer", "entry": "nnssl_pretrain", "argv": PRETRAIN_ARGS,
                          "signal": "SIGTERM"}, env, 128 + signal.SIGTERM if at == "signal" else -signal.SIGKILL)
    if at == "signal":
        log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
        assert f"SIGTERM received: stopped during epoch {KILL_EPOCH};" in log
        assert f"(after epoch {KILL_EPOCH - 1}) is the resume point: run the same command with --c" in log
        assert "Traceback" not in result.stderr
    assert not (fold / "checkpoint_final.pth").exists()
    assert safe_load(fold / "checkpoint_latest.pth")["current_epoch"] == KILL_EPOCH
    temp_files = list(fold.glob(".*.tmp"))
    assert len(temp_files) == (1 if at == "write" else 0), temp_files  # the killed write left its temp file
    result = _run(["nnssl_pretrain", *PRETRAIN_ARGS, "--c"], env)
    logs = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))  # the killed run's and the resumed's
    assert "resumed from" in result.stdout + logs and logs.count("Epoch 2 \n") == 2 and logs.count("Epoch 1 \n") == 1, \
        "resumed at epoch 2, nothing else redone"
    resumed = torch.load(fold / "ssl_weights.pth", weights_only=True)["network_weights"]
    assert uninterrupted_weights.keys() == resumed.keys()
    differing = [k for k in resumed if not torch.equal(uninterrupted_weights[k], resumed[k])]
    assert not differing, f"resumed weights differ from the uninterrupted run's in {len(differing)} tensors, " \
                          f"e.g. {differing[:3]}"
    assert not list(fold.glob(".*.tmp")), "no temp file of a killed write is left behind"


DENSE_ARGS = ["-d", "990", "-m", "hier", "-c", "3d_cpu", "-device", "cpu", "--epochs", "4", "--iters", "3",
              "--seed", "7", "--eval-target", "991", "--eval-every", "2"]
DENSE_FOLD = Path(UNL) / "nnsslPretrainer_hier_4epochs_3iters_seed7__nnsslPretrainPlans__3d_cpu" / "fold_all"


@pytest.mark.slow
def test_a_dense_run_with_the_heldout_hook_stopped_by_sigterm_resumes_bit_identical(world, tmp_path):
    """hier (local corruptions, voxel sampling, restoration: more random streams than moco) with the held-out hook,
    as the probe study runs it: SIGTERM after step 2 of epoch 2, then --c, ends with the uninterrupted run's weights
    and held-out values."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    _run(["nnssl_pretrain", *DENSE_ARGS], _env(world, whole))
    _run_killed({"at": "signal", "epoch": KILL_EPOCH, "step": 2, "module": "nnssl_plugin.pretrain.trainer",
                 "cls": "nnsslPretrainer", "entry": "nnssl_pretrain", "argv": DENSE_ARGS, "signal": "SIGTERM"},
                _env(world, stopped), 128 + signal.SIGTERM)
    _run(["nnssl_pretrain", *DENSE_ARGS, "--c"], _env(world, stopped))
    reference, resumed = ([torch.load(root / DENSE_FOLD / "ssl_weights.pth", weights_only=True)["network_weights"]
                           for root in (whole, stopped)])
    assert reference.keys() == resumed.keys()
    assert [k for k in resumed if not torch.equal(reference[k], resumed[k])] == []

    def heldout_lines(root):
        lines = "".join(p.read_text() for p in sorted((root / DENSE_FOLD).glob("training_log_*.txt"))).splitlines()
        return [line.split(": ", 1)[1] for line in lines if ": held-out: held-out (" in line]

    assert len(heldout_lines(whole)) == 2 and heldout_lines(stopped) == heldout_lines(whole)


@pytest.mark.slow
def test_fine_tuning_killed_mid_epoch_resumes_from_its_last_checkpoint(world, tmp_path):
    trainer = "nnUNetTrainerSSLScratch_4epochs_3iters_seed2_noTTA"  # no mirrored validation: faster
    argv = ["991", "3d_cpu", "0", "-tr", trainer, "-device", "cpu"]
    env = _env(world, tmp_path)
    fold = tmp_path / LAB / f"{trainer}__nnUNetPlans__3d_cpu" / "fold_0"
    _run_killed({"at": "step", "epoch": KILL_EPOCH, "step": 2, "module": "nnssl_plugin.nnunet_trainers.ssl_trainers",
                 "cls": "nnUNetTrainerSSLScratch", "entry": "nnUNetv2_train", "argv": argv}, env)
    assert safe_load(fold / "checkpoint_latest.pth")["current_epoch"] == KILL_EPOCH  # numpy scalars inside
    _run(["nnUNetv2_train", *argv, "--c"], env)
    logs = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    assert logs.count("Epoch 2 \n") == 2 and logs.count("Epoch 1 \n") == 1, "resumed at epoch 2, nothing else redone"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_with_loader_workers_stops_cleanly_without_a_worker_traceback(world, tmp_path):
    """With two loader workers (nnUNet_n_proc_DA=2) a SIGTERM ends the run with its one stop line and exit code
    128 + 15: no batchgenerators traceback (the results thread's receive cut off by the workers' exit,
    nnssl_plugin/loader_shutdown.py) and no worker left behind."""
    argv = ["-d", "990", "-m", "moco", "-c", "3d_cpu", "-device", "cpu", "--epochs", "2", "--iters", "3"]
    env = {**_env(world, tmp_path), "nnUNet_n_proc_DA": "2"}
    result = _run_killed({"at": "signal", "epoch": 1, "step": 2, "module": "nnssl_plugin.pretrain.trainer",
                          "cls": "nnsslPretrainer", "entry": "nnssl_pretrain", "argv": argv, "signal": "SIGTERM"},
                         env, 128 + signal.SIGTERM)
    assert "SIGTERM received: stopped during epoch 1;" in result.stdout
    assert "Traceback" not in result.stderr and "Exception in" not in result.stderr, result.stderr[-3000:]
    ours = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).startswith(sys.executable)
            and json.dumps(argv) in _cmdline(p)]
    assert ours == [], "no loader worker of the stopped run is left"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
