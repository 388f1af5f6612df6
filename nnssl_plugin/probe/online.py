"""The online probe during pretraining (`nnssl_pretrain --eval-target D --probe-every K`): the dense probe
(`nnssl_plugin.probe.dense`; docs/ARCHITECTURE.md, "Evaluation and demo data") of the run's current weights every K
epochs and at the last, against the probe of a random initialisation.

- target: D's labelled cases preprocessed with the plans nnssl_prepare copied into the pretraining plans (the
  `target_plans` of their MARKER record, checked by `locate_target_data` as the held-out hook checks them), fold 0
  of D's splits (`load_target`);
- at the start: the random-init reference, the planned U-Net freshly initialised with the run's seed and read at the
  method's level set: what `nnssl_probe random -d D -c <configuration> -p <target plans> --levels-like <method>
  --seed <run seed>` gives (a resumed run reuses the record of its first start when the settings match);
- every K epochs and at the last: the current weights, read exactly as `nnssl_probe <run folder>` reads a run: the
  run's own writer (`write_pretrained_weights`) writes them to a temporary file (removed afterwards, never in the run
  folder), which `load_frozen_source` loads into a fresh planned U-Net: the probe works on a copy;
- the probe's settings are nnssl_probe's defaults (`ProbeConfig`) with the run's seed (0 without `--seed`, as
  nnssl_probe's default): every probe of a run draws the same voxels, the random-init one included.

Everything runs inside `isolated(seed)` on that copy: the training's random streams, weights, modes and
requires_grad flags are untouched, so a run trains bit for bit as without the probe. One process only: refused
under DDP. Each probe's record (nnssl_probe's JSON, `probe_record`, plus an "online" entry) is written atomically to
`<run folder>/online_probe/` (`random_init.json`, `epoch_<E>.json` with nnU-Net's 0-based epoch E).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nnssl_plugin.data.prepare import MARKER
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.heldout import locate_target_data
from nnssl_plugin.rng import isolated
from nnssl_plugin.io_utils import atomic_write_json, load_json
from nnssl_plugin.modules.probe_levels import level_channels
from nnssl_plugin.ops.distributed import is_distributed
from nnssl_plugin.pretrained import WEIGHTS_FILE, write_pretrained_weights
from nnssl_plugin.probe.dense import ProbeConfig, ProbeResult, run_dense_probe
from nnssl_plugin.probe.report import FORMAT, probe_record
from nnssl_plugin.probe.sources import RANDOM, FrozenSource, levels_of, load_frozen_source
from nnssl_plugin.probe.target import Target, load_target

FOLDER = "online_probe"  # in the run's fold folder
REFERENCE = "random_init.json"
FOLD = 0


def epoch_file(epoch: int) -> str:
    """The record of the probe after nnU-Net's (0-based) epoch `epoch`."""
    return f"epoch_{epoch:04d}.json"


@dataclass
class ProbeValues:
    """One probe of the current weights: its mean Dice, the random-init reference's, and its wall time."""
    dice: float
    random_dice: float
    seconds: float
    path: Path  # the JSON record written


class OnlineProbe:
    """The hook: `create` and `start` at the start of training, `due` + `evaluate` at epoch ends."""

    def __init__(self, target: Target, method: str, seed: int, every: int, folder: Path,
                 config: ProbeConfig):
        self.target, self.method, self.seed, self.every, self.folder = target, method, seed, every, folder
        self.config = config
        self.random_dice: float | None = None

    @classmethod
    def create(cls, target: str | int, pretrain_plans: dict, configuration: str, method: str, seed: int | None,
               every: int, run_folder: str | Path, precision: str = "amp") -> OnlineProbe:
        """Locate and load the target (fold 0 of the target plans nnssl_prepare copied); refuse DDP. `precision`:
        the run's autocast (`nnssl_plugin.precision`), which every probe forward uses."""
        if is_distributed():
            raise NnsslError("--probe-every runs in the training process and not under DDP (-num_gpus > 1); train "
                             "on one GPU, or leave it out and probe the run afterwards with nnssl_probe")
        folder = locate_target_data(target, pretrain_plans, configuration)  # the same checks as the held-out hook
        seed = 0 if seed is None else int(seed)
        with isolated(seed):
            loaded = load_target(folder.parent.name, pretrain_plans[MARKER]["target_plans"], configuration, FOLD)
        return cls(loaded, method, seed, every, Path(run_folder) / FOLDER, ProbeConfig(seed=seed, precision=precision))

    @property
    def description(self) -> str:
        t = self.target
        return (f"online probe on {t.name} (plans '{t.plans['plans_name']}', {t.configuration}, fold {t.fold}: "
                f"{len(t.train)} training, {len(t.val)} validation case(s)), {self.config.voxels_per_class} voxels "
                f"per class, seed {self.seed}: random init at the start, the current weights every {self.every} "
                f"epochs and at the last; records in {self.folder}")

    def due(self, epoch: int, num_epochs: int) -> bool:
        """Probe after this epoch: every `every` epochs and at the last."""
        return (epoch + 1) % self.every == 0 or epoch == num_epochs - 1

    # ----- the probes ---------------------------------------------------------------------------------------------
    def _probe(self, source: FrozenSource, device: torch.device) -> ProbeResult:
        t = self.target
        return run_dense_probe(source.unet, source.levels, t.train, t.val, t.patch_size, len(t.class_names), device,
                               t.ignore_label, self.config)

    def _record(self, text: str, source: FrozenSource, result: ProbeResult, levels_like: str | None,
                device: torch.device, online: dict) -> dict:
        record = probe_record(text, source, self.target, result, self.config, levels_like, device.type,
                              torch.get_num_threads(), sum(level_channels(source.unet, source.levels)))
        record["online"] = online
        return record

    def reference_settings(self, device: torch.device) -> dict:
        """What decides the random-init reference's bits, as its record holds it (dotted: nested)."""
        t, c = self.target, self.config
        return {"format": FORMAT, "source": RANDOM, "levels": levels_of(self.method), "device": device.type,
                "cpu_threads": torch.get_num_threads(), "dataset": t.name,
                "plans": t.plans["plans_name"], "configuration": t.configuration, "fold": t.fold,
                "train_cases": [case.name for case in t.train], "val_cases": [case.name for case in t.val],
                "voxels_per_class": c.voxels_per_class, "seed": c.seed, "tile_step_size": c.tile_step_size,
                "regression.weight_decay": c.weight_decay, "regression.tolerance": c.tolerance,
                "regression.max_iterations": c.max_iterations}

    def stored_reference(self, device: torch.device) -> float | None:
        """The mean Dice of the random-init record in the folder if it holds these settings (NaN: nothing scored),
        else None."""
        path = self.folder / REFERENCE
        stored = load_json(path) if path.is_file() else None
        if stored is None or any(_field(stored, k) != v for k, v in self.reference_settings(device).items()):
            return None
        return _dice(stored["mean_dice"])

    def start(self, device: torch.device, resumed: bool) -> tuple[float, float | None]:
        """At the start of training: the random-init reference's mean Dice (NaN: nothing scored) and the seconds it
        took. A resumed run (--c) reuses the record its first start wrote if the settings match (seconds None); a
        fresh start probes it and removes the epoch records an earlier run in this folder left."""
        stored = self.stored_reference(device) if resumed else None
        if stored is not None:
            self.random_dice = stored
            return stored, None
        if not resumed:
            for old in self.folder.glob("epoch_*.json"):
                old.unlink()
        start = time.perf_counter()
        t = self.target
        with isolated(self.seed):
            source = load_frozen_source(RANDOM, t.folder, t.plans, t.configuration, t.dataset_json,
                                        t.num_input_channels, self.method, self.seed)
            result = self._probe(source, device)
        seconds = time.perf_counter() - start
        record = self._record(RANDOM, source, result, self.method, device,
                              {"reference": "random init", "seconds": round(seconds, 3)})
        atomic_write_json(self.folder / REFERENCE, record)
        self.random_dice = result.mean_dice
        return result.mean_dice, seconds

    def evaluate(self, payload: dict, run: str, trainer_name: str, epoch: int, device: torch.device) -> ProbeValues:
        """Probe the run's current weights after epoch `epoch` (`payload`: the pretrained-weights file's content,
        `nnssl_plugin.pretrained.pretrained_payload`; `run`: its folder; `trainer_name`: its trainer class); write
        the record."""
        if self.random_dice is None:
            raise RuntimeError("OnlineProbe.start() must run before evaluate()")
        start = time.perf_counter()
        t = self.target
        with tempfile.TemporaryDirectory(prefix="nnssl_online_probe_") as tmp, isolated(self.seed):
            path = write_pretrained_weights(payload, Path(tmp) / WEIGHTS_FILE)
            source = load_frozen_source(str(path), t.folder, t.plans, t.configuration, t.dataset_json,
                                        t.num_input_channels, None, self.seed)
            result = self._probe(source, device)
        seconds = time.perf_counter() - start
        source.description = source.description.replace(str(path), f"{run} (weights after epoch {epoch})")
        source.file = None  # the temporary file is gone
        record = self._record(run, source, result, None, device,
                              {"epoch": epoch, "epochs_trained": epoch + 1, "trainer": trainer_name,
                               "random_init_mean_dice": _number(self.random_dice), "seconds": round(seconds, 3)})
        out = self.folder / epoch_file(epoch)
        atomic_write_json(out, record)
        return ProbeValues(result.mean_dice, self.random_dice, seconds, out)

    def summary(self, values: ProbeValues) -> str:
        """One log line."""
        return (f"online probe ({self.target.name}, fold {self.target.fold}): mean Dice {values.dice:.3f} (random "
                f"init {values.random_dice:.3f}); {values.seconds:.1f} s")


def _field(record: dict, dotted: str):
    value = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _dice(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _number(value: float) -> float | None:
    return None if value != value else value  # JSON has no NaN
