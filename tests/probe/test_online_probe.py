"""The online probe during pretraining (`nnssl_pretrain --eval-target D --probe-every K`): its log keys (old logs
still load), its due epochs, the run record, the reuse of a stored random-init reference, and end to end on the
phantom world: the same weights as without the probe, the log lines, one logger value per epoch, the JSON records and
a random-init reference equal to `nnssl_probe random`'s."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnssl_plugin.probe.online import FOLDER, REFERENCE, OnlineProbe, ProbeValues, epoch_file
from nnssl_plugin.ssl_logging import PROBE_KEYS, SSL_KEYS, SSLLocalLogger, log_probe

UNL = "Dataset990_PhantomUnlabelled"
LAB = "Dataset991_PhantomBTCV"
BIN = Path(sys.executable).parent


# ----- the log -------------------------------------------------------------------------------------------------------
def _values(dice: float, random_dice: float = 0.125) -> ProbeValues:
    return ProbeValues(dice, random_dice, 1.0, Path("x.json"))


def test_probe_values_are_logged_at_probed_epochs_and_none_elsewhere():
    logger = SSLLocalLogger()
    for epoch in range(4):
        log_probe(logger, epoch, _values(0.25 + epoch) if epoch in (1, 3) else None)
    log = logger.get_checkpoint()
    assert log["probe_dice"] == [None, 1.25, None, 3.25]
    assert log["probe_random_dice"] == [None, 0.125, None, 0.125]
    assert all(type(v) is float for v in log["probe_dice"] if v is not None)  # loadable with weights_only


def test_a_run_that_gets_the_probe_late_keeps_one_entry_per_epoch():
    assert set(PROBE_KEYS) <= set(SSL_KEYS)
    late = SSLLocalLogger()  # a run that gets --probe-every only at a --c
    log_probe(late, 2, _values(0.5))
    assert late.get_value("probe_random_dice", None) == [None, None, 0.125]


# ----- the hook on the phantom world (no probe runs) ----------------------------------------------------------------
def _online_probe(in_world, run_folder: Path, seed=3, every=2) -> OnlineProbe:
    plans = json.loads((in_world.preprocessed / UNL / "nnsslPretrainPlans.json").read_text())
    return OnlineProbe.create(991, plans, "3d_cpu", "hier", seed, every, run_folder)


def test_probes_are_due_every_k_epochs_and_at_the_last(in_world, tmp_path):
    probe = _online_probe(in_world, tmp_path, every=3)
    assert [e for e in range(10) if probe.due(e, 10)] == [2, 5, 8, 9]
    assert probe.target.name == LAB and probe.target.plans["plans_name"] == "nnUNetPlans" and probe.target.fold == 0
    assert probe.config.seed == 3 and probe.folder == tmp_path / FOLDER
    assert _online_probe(in_world, tmp_path, seed=None).seed == 0  # a run without --seed: nnssl_probe's default


def test_a_resumed_run_reuses_its_random_init_reference_only_with_the_same_settings(in_world, tmp_path):
    probe, cpu = _online_probe(in_world, tmp_path), torch.device("cpu")
    assert probe.stored_reference(cpu) is None
    record = {"mean_dice": 0.1875, "regression": {}}
    for key, value in probe.reference_settings(cpu).items():
        parent, _, name = key.rpartition(".")
        (record[parent] if parent else record)[name] = value
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / REFERENCE).write_text(json.dumps(record))
    (tmp_path / FOLDER / epoch_file(4)).write_text("{}")  # a probe of the run before the --c
    assert probe.stored_reference(cpu) == 0.1875
    assert probe.start(cpu, resumed=True) == (0.1875, None) and probe.random_dice == 0.1875
    assert (tmp_path / FOLDER / epoch_file(4)).is_file()
    assert probe.reference_settings(cpu)["levels"] == "decoder"  # hier: decoder levels, also for random init
    for key, other in (("seed", 4), ("val_cases", ["phantom_000"]), ("levels", "encoder"), ("device", "cuda"),
                       ("cpu_threads", torch.get_num_threads() + 1)):
        (tmp_path / FOLDER / REFERENCE).write_text(json.dumps({**record, key: other}))
        assert probe.stored_reference(cpu) is None, key
    (tmp_path / FOLDER / REFERENCE).write_text(json.dumps({**record, "regression": {**record["regression"],
                                                                                   "weight_decay": 1.0}}))
    assert probe.stored_reference(cpu) is None


def test_the_flag_is_recorded_with_the_heldout_settings_and_keeps_the_trainer_name(in_world, monkeypatch, tmp_path):
    from nnssl_plugin.cli import pretrain as pretrain_cli

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    calls = []
    monkeypatch.setattr("nnunetv2.run.run_training.run_training", lambda *a, **k: calls.append((a, k)))
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    threads = torch.get_num_threads()
    base = ["-d", "990", "-m", "hier", "-c", "3d_cpu", "-device", "cpu", "--epochs", "2", "--seed", "5"]
    try:
        assert pretrain_cli.main(base) == 0
        assert pretrain_cli.main([*base, "--eval-target", "991", "--eval-every", "4", "--probe-every", "3"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert calls[0][0][3] == calls[1][0][3] == "nnsslPretrainer_hier_2epochs_seed5", "the same trainer, one folder"
    fold = tmp_path / UNL / "nnsslPretrainer_hier_2epochs_seed5__nnsslPretrainPlans__3d_cpu" / "fold_all"
    record = json.loads((fold / "nnssl_run.json").read_text())
    assert record["heldout"] == {"target": LAB, "every": 4, "probe_every": 3}


# ----- end to end ----------------------------------------------------------------------------------------------------
TRAINER = "nnsslPretrainer_moco_zca_2epochs_1iters_seed3"  # the same name with and without the probe
LINE = re.compile(rf"online probe \({LAB}, fold 0\): mean Dice (\S+) \(random init (\S+)\); (\S+) s")


@pytest.mark.slow
def test_a_run_with_the_online_probe_trains_like_one_without_and_logs_and_records_the_probes(world, tmp_path):
    """moco_zca, 2 epochs x 1 iteration, seed 3: hook-on (--eval-target 991 --eval-every 2 --probe-every 1: held-out
    values at the start and after epoch 1; random init probed at the start, a probe after each epoch, the first one
    between two epochs of training) and hook-off runs end with bit-identical weights; the hook-on run logs and
    plots the held-out values, logs and records its probes (the current weights read with their whitening), and
    its random-init reference is nnssl_probe's for the same target, fold, level set and seed."""
    command = [str(BIN / "nnssl_pretrain"), "-d", "990", "-m", "moco_zca", "-c", "3d_cpu", "-device", "cpu", "--epochs",
               "2", "--iters", "1", "--seed", "3"]
    folds = {}
    for probe in (False, True):
        results, tmp = tmp_path / f"results_{probe}", tmp_path / f"tmp_{probe}"
        tmp.mkdir()
        extra = ["--eval-target", "991", "--eval-every", "2", "--probe-every", "1"] if probe else []
        folds[probe] = results / UNL / f"{TRAINER}__nnsslPretrainPlans__3d_cpu" / "fold_all"
        if probe:  # an earlier, longer run in this folder: a fresh start removes its records
            (folds[probe] / FOLDER).mkdir(parents=True)
            (folds[probe] / FOLDER / epoch_file(7)).write_text("{}")
        done = subprocess.run([*command, *extra], env={**world.env, "nnUNet_results": str(results), "TMPDIR": str(tmp)},
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        left = [p for p in tmp.rglob("*") if "nnssl_online_probe" in p.name or p.suffix == ".pth"]
        assert not left, f"the temporary weights are removed: {left}"
    weights = {p: torch.load(folds[p] / "ssl_weights.pth", weights_only=True)["network_weights"] for p in folds}
    assert weights[True].keys() == weights[False].keys()
    assert all(torch.equal(weights[True][k], weights[False][k]) for k in weights[False])

    fold = folds[True]
    log_text = next(fold.glob("training_log_*.txt")).read_text()
    assert re.search(r"online probe, random init: mean Dice \d\.\d{3}; [\d.]+ s", log_text)
    lines = LINE.findall(log_text)
    assert len(lines) == 2, log_text[-3000:]
    log = torch.load(fold / "checkpoint_final.pth", weights_only=True)["logging"]
    probe_dice, random_dice = log["probe_dice"], log["probe_random_dice"]
    assert len(probe_dice) == len(random_dice) == len(log["train_losses"]) == 2
    assert [v is not None for v in log["heldout_top1"]] == [False, True]  # the held-out hook's own schedule
    assert "held-out at initialisation" in log_text and (fold / "heldout_init.json").is_file()
    assert os.path.getsize(fold / "progress.png") > 1000

    assert sorted(p.name for p in (fold / FOLDER).iterdir()) == [epoch_file(0), epoch_file(1), REFERENCE]
    reference = json.loads((fold / FOLDER / REFERENCE).read_text())
    for epoch in (0, 1):
        record = json.loads((fold / FOLDER / epoch_file(epoch)).read_text())
        assert record["mean_dice"] == probe_dice[epoch] and reference["mean_dice"] == random_dice[epoch]
        assert (f"{probe_dice[epoch]:.3f}", f"{random_dice[epoch]:.3f}") == lines[epoch][:2]
        assert (record["method"], record["levels"], record["own_levels"], record["file"]) == ("moco_zca", "encoder",
                                                                                              "encoder", None)
        assert record["whitened"]
        assert record["online"]["epoch"] == epoch and record["fold"] == 0 and record["dataset"] == LAB
        assert record["sampled_per_class"] == reference["sampled_per_class"], "the same voxels in every probe"
    assert json.loads((fold / "nnssl_run.json").read_text())["heldout"]["probe_every"] == 1

    out = tmp_path / "random.json"  # the random-init reference is what nnssl_probe gives for the same settings
    world.run("nnssl_probe", "random", "-d", "991", "-c", "3d_cpu", "--levels-like", "moco_zca", "--seed", "3", "-device",
              "cpu", "-o", str(out))
    cli = json.loads(out.read_text())
    assert cli["mean_dice"] == reference["mean_dice"] and cli["per_case"] == reference["per_case"]
