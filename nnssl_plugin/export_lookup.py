"""Which export a weights-loading trainer uses when its plans name none (`nnUNetv2_train ... -tr nnUNetTrainerSSLInit`
without `-p`): the exports of the dataset that fit the run's configuration and architecture.

An export is a plans file of the dataset's folder in nnUNet_preprocessed that carries a `pretrain_info` block
(`nnssl_export` writes `nnsslPlans_<method>.json`, or the name given with `--plans-name`). It fits a run when it was
exported for the run's configuration and the architecture it was exported for (`pretrain_info["architecture_sha256"]`,
the hash `load_exported_weights` checks against the weights file) is the run's. Exactly one fitting export is used:
its `pretrain_info` is added to the run's own plans (which keep their name, so nnU-Net's output folder and
`nnUNetv2_predict` without `-p` stay the plain ones), with `export_plans` naming the export. None or several fitting
exports are an NnsslError whose one line names the fix.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export import first_architecture_difference
from nnssl_plugin.plans import resolve_configuration
from nnssl_plugin.pretrained import architecture_hash


@dataclass(frozen=True)
class Export:
    """One export of a dataset: its plans name and plans (holding `pretrain_info`)."""
    name: str
    plans: dict

    @property
    def method(self) -> str:
        return str(self.plans["pretrain_info"].get("method", "?"))


def exports_in(folder: Path) -> list[Export]:
    """Every plans file in `folder` (a dataset's folder in nnUNet_preprocessed) that carries `pretrain_info`, sorted
    by name. Other JSON files (dataset.json, splits, nnU-Net's own plans) and unreadable ones are not exports."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            plans = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(plans, dict) and isinstance(plans.get("pretrain_info"), dict) and "configurations" in plans:
            found.append(Export(str(plans.get("plans_name", path.stem)), plans))
    return found


def misfit(export: Export, configuration: str, architecture: dict) -> str | None:
    """Why `export` does not fit a run of `configuration` whose (resolved) architecture block is `architecture` (a
    short phrase), or None if it fits."""
    info = export.plans["pretrain_info"]
    if info.get("configuration") != configuration:
        return f"exported for configuration '{info.get('configuration')}'"
    if info.get("architecture_sha256") == architecture_hash(architecture):
        return None
    try:
        theirs = resolve_configuration(export.plans, configuration)["architecture"]
    except NnsslError:
        theirs = {}
    diff = first_architecture_difference(theirs, architecture)
    return f"architecture differs at '{diff}'" if diff else "exported for another architecture"


def export_command(run_plans: dict, configuration: str) -> str:
    """The `nnssl_export` line that writes an export fitting this run."""
    target = int(run_plans["dataset_name"][7:10])
    plans = "" if run_plans["plans_name"] == "nnUNetPlans" else f" -p {run_plans['plans_name']}"
    return (f"nnssl_export -d <pretraining dataset id> -m <method> -t {target} -c {configuration}{plans}")


def select_export(run_plans: dict, configuration: str, folder: Path) -> Export:
    """The one export in `folder` that fits a run of `configuration` with `run_plans`; NnsslError (one line naming
    the fix) when none or several fit."""
    architecture = resolve_configuration(run_plans, configuration)["architecture"]
    exports = exports_in(folder)
    reasons = {e.name: misfit(e, configuration, architecture) for e in exports}
    fitting = [e for e in exports if reasons[e.name] is None]
    where = f"plans '{run_plans['plans_name']}' of {run_plans['dataset_name']} name no pretrained weights"
    if len(fitting) > 1:
        options = ", ".join(f"-p {e.name} ({e.method})" for e in fitting)
        raise NnsslError(f"{where} and {len(fitting)} exports fit configuration '{configuration}': pass the one to "
                         f"train with: {options}")
    if not fitting:
        others = "; ".join(f"{name}: {why}" for name, why in reasons.items())
        raise NnsslError(f"{where} and no export fits configuration '{configuration}'"
                         + (f" ({others})" if others else "")
                         + f"; run {export_command(run_plans, configuration)} first")
    return fitting[0]


def plans_with_export(run_plans: dict, export: Export) -> dict:
    """A copy of the run's plans carrying the export's `pretrain_info` (plus `export_plans`, its plans name): what
    the trainer builds and loads from, and what nnU-Net copies into the run's `plans.json` for nnUNetv2_predict."""
    plans = copy.deepcopy(run_plans)
    plans["pretrain_info"] = {**copy.deepcopy(export.plans["pretrain_info"]), "export_plans": export.name}
    return plans
