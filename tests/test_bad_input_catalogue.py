"""The bad-input catalogue (docs/BAD_INPUT.md) run as one parametrised test: each row's command, exit code and message.

The table is the source of truth: a row without a case here, a case without a row, or a row pointing at a test
function that does not exist fails. Commands run in-process (`main(argv)` of our CLIs, nnU-Net's `nnUNetv2_train`
entry) on a private copy of the session's phantom datasets; no row trains.
"""
from __future__ import annotations

import os
import ast
import json
import re
import shlex
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from conftest import FullDiskFile
import SimpleITK as sitk
import torch
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnssl_plugin.cli import env as env_cli
from nnssl_plugin.cli import export as export_cli
from nnssl_plugin.cli import prepare as prepare_cli
from nnssl_plugin.cli import probe as probe_cli
from nnssl_plugin.cli import pretrain as pretrain_cli
from nnssl_plugin.data.two_view import TwoViewDataLoader
from nnssl_plugin.errors import NnsslError

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "BAD_INPUT.md"
HERE = "tests/test_bad_input_catalogue.py"
CATALOGUE_NODE = re.compile(rf"^{re.escape(HERE)}::test_bad_input\[(?P<id>[\w-]+)\]$")
UNL, LAB = "Dataset990_PhantomUnlabelled", "Dataset991_PhantomBTCV"


# ----- the table ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    input: str
    command: str  # the backticked command line (empty when the cell holds none)
    fragments: tuple[str, ...]  # the backticked parts of the message, in order
    exit: str  # "0", "1", "handled", "ValueError"
    node: str  # pytest node id of the test that checks the row

    @property
    def case_id(self) -> str | None:
        match = CATALOGUE_NODE.match(self.node)
        return match["id"] if match else None


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def parse_catalogue(text: str) -> list[Row]:
    """Every 5-cell row of the markdown tables (header and separator rows skipped); a malformed row raises."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Input":
            continue
        if len(cells) != 5:
            raise ValueError(f"{DOC.name} line {number}: {len(cells)} cells, expected 5: {line}")
        commands, nodes = _backticked(cells[1]), _backticked(cells[4])
        if len(nodes) != 1:
            raise ValueError(f"{DOC.name} line {number}: 'Tested in' must hold one `node id`: {cells[4]}")
        rows.append(Row(cells[0], commands[0] if commands else "", tuple(_backticked(cells[2])), cells[3], nodes[0]))
    return rows


ROWS = parse_catalogue(DOC.read_text())


def row_for(node: str) -> Row:
    return next(r for r in ROWS if r.node == node)


def assert_fragments_in_order(text: str, fragments: tuple[str, ...]) -> None:
    position = 0
    for fragment in fragments:
        found = text.find(fragment, position)
        assert found >= 0, f"message fragment {fragment!r} not found (in order) in:\n{text}"
        position = found + len(fragment)


# ----- the world and the commands -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def catalogue_root(world, tmp_path_factory) -> Path:
    """A private copy of the phantom datasets (raw and preprocessed): rows add and break datasets freely."""
    root = tmp_path_factory.mktemp("catalogue")
    for name in (UNL, LAB):
        shutil.copytree(world.raw / name, root / "nnUNet_raw" / name)
        shutil.copytree(world.preprocessed / name, root / "nnUNet_preprocessed" / name,
                        ignore=shutil.ignore_patterns("nnsslPlans_*"))
    return root


@dataclass
class Ctx:
    raw: Path
    preprocessed: Path
    results: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def images_only(self, name: str, cases: tuple[str, ...] = ("phantom_000", "phantom_001", "phantom_002"),
                    channels: tuple[str, ...] = ("CT",), ending: str = ".nii.gz") -> Path:
        """An images-only raw dataset made of the labelled phantom's images."""
        folder = self.raw / name
        (folder / "imagesTr").mkdir(parents=True)
        for case in cases:
            for c in range(len(channels)):
                source = self.raw / LAB / "imagesTr" / f"{case}_0000.nii.gz"
                if ending == ".nii.gz":
                    shutil.copy(source, folder / "imagesTr" / f"{case}_{c:04d}{ending}")
                else:
                    write_image(sitk.GetArrayFromImage(sitk.ReadImage(str(source))), sitk.ReadImage(str(source)),
                                folder / "imagesTr" / f"{case}_{c:04d}{ending}")
        (folder / "dataset.json").write_text(json.dumps({
            "channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": {"background": 0},
            "numTraining": len(cases), "file_ending": ending}))
        return folder

    def random_export(self, plans_name: str) -> dict:
        argv = ["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", plans_name, "--overwrite"]
        assert export_cli.main(argv) == 0
        return json.loads((self.preprocessed / LAB / f"{plans_name}.json").read_text())

    def stub_training(self) -> list:
        """Replace nnU-Net's training entry (our CLI imports it at call time); returns the list of its calls."""
        calls = []
        self.monkeypatch.setattr("nnunetv2.run.run_training.run_training", lambda *a, **k: calls.append((a, k)))
        return calls


def write_image(array: np.ndarray, like: sitk.Image, path: Path) -> None:
    """`array` with `like`'s geometry (and none of its file's metadata)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(like.GetSpacing())
    image.SetOrigin(like.GetOrigin())
    image.SetDirection(like.GetDirection())
    sitk.WriteImage(image, str(path))


@pytest.fixture
def ctx(catalogue_root, tmp_path, monkeypatch) -> Iterator[Ctx]:
    monkeypatch.setenv("nnUNet_raw", str(catalogue_root / "nnUNet_raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(catalogue_root / "nnUNet_preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)  # restored afterwards even where a command sets it
    threads = torch.get_num_threads()  # -device cpu sets torch's thread count for the process
    yield Ctx(catalogue_root / "nnUNet_raw", catalogue_root / "nnUNet_preprocessed", tmp_path / "results",
              tmp_path, monkeypatch)
    torch.set_num_threads(threads)


def _nnunet_train(argv: list[str]) -> int:
    """nnU-Net's `nnUNetv2_train` in-process: an uncaught exception is exit code 1 with the traceback's last line
    on stderr, as the console script ends."""
    from nnunetv2.run.run_training import run_training_entry

    saved = sys.argv
    sys.argv = ["nnUNetv2_train", *argv]
    try:
        run_training_entry()
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:  # noqa: BLE001 - what the console script would end with
        print(traceback.format_exception_only(e)[-1].strip(), file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


MAINS: dict[str, Callable[[list[str]], int]] = {"nnssl_prepare": prepare_cli.main, "nnssl_pretrain": pretrain_cli.main,
                                                 "nnssl_export": export_cli.main, "nnUNetv2_train": _nnunet_train,
                                                 "nnssl_probe": probe_cli.main, "nnssl_env": env_cli.main}


# ----- one case per catalogue row: set up (yield the command's <placeholders>), then check what is left ---------------
CASES: dict[str, Callable[[Ctx], Iterator[dict[str, str]]]] = {}


def case(case_id: str):
    def register(setup):
        CASES[case_id] = setup
        return setup

    return register


@case("unknown-dataset-id")
def case_unknown_dataset_id(ctx):
    yield {}


@case("target-not-planned")
def case_target_not_planned(ctx):
    ctx.images_only("Dataset981_Unplanned", cases=("phantom_000",))
    target = ctx.images_only("Dataset982_NotPlanned", cases=("phantom_000",))
    (target / "labelsTr").mkdir()  # a labelled target, only not planned yet
    shutil.copy(ctx.raw / LAB / "labelsTr" / "phantom_000.nii.gz", target / "labelsTr")
    labels = json.loads((ctx.raw / LAB / "dataset.json").read_text())["labels"]
    (target / "dataset.json").write_text(json.dumps({**json.loads((target / "dataset.json").read_text()),
                                                     "labels": labels}))
    yield {}


@case("ids-swapped")
def case_ids_swapped(ctx):
    yield {}


@case("channel-count-differs")
def case_channel_count_differs(ctx):
    ctx.images_only("Dataset983_TwoChannels", cases=("phantom_000",), channels=("CT", "PET"))
    yield {}
    assert not (ctx.preprocessed / "Dataset983_TwoChannels").exists()


@case("empty-imagestr")
def case_empty_imagestr(ctx):
    ctx.images_only("Dataset984_Empty", cases=())
    yield {}


def _written(ctx, name):
    return sorted(p.name for p in (ctx.preprocessed / name / "nnsslPretrainPlans_3d_fullres").iterdir())


@case("unreadable-image")
def case_unreadable_image(ctx):
    folder = ctx.images_only("Dataset985_OneBroken")
    (folder / "imagesTr" / "phantom_001_0000.nii.gz").write_bytes(b"this is not a nifti file")
    yield {}
    assert _written(ctx, "Dataset985_OneBroken") == [f"phantom_00{i}{e}" for i in (0, 2)
                                                     for e in (".b2nd", ".pkl", "_seg.b2nd")]


@case("nan-voxel")
def case_nan_voxel(ctx):
    folder = ctx.images_only("Dataset986_NaN", ending=".mha")  # SimpleITK reads NaN in NIfTI as 0
    path = folder / "imagesTr" / "phantom_001_0000.mha"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[tuple(s // 2 for s in array.shape)] = np.nan
    write_image(array, image, path)
    yield {}
    assert _written(ctx, "Dataset986_NaN") == [f"phantom_00{i}{e}" for i in (0, 2)
                                                for e in (".b2nd", ".pkl", "_seg.b2nd")]


@case("one-case")
def case_one_case(ctx):
    ctx.images_only("Dataset979_OneCase", cases=("phantom_000",))
    yield {}
    assert (ctx.preprocessed / "Dataset979_OneCase" / "nnsslPretrainPlans.json").is_file()


@case("configuration-not-in-plans")
def case_configuration_not_in_plans(ctx):
    yield {}


@case("nnunet-variable-unset")
def case_nnunet_variable_unset(ctx):
    ctx.monkeypatch.delenv("nnUNet_preprocessed")
    yield {}


@case("modality-differs")
def case_modality_differs(ctx):
    ctx.images_only("Dataset978_MRI", channels=("T1",))
    yield {}
    assert not (ctx.preprocessed / "Dataset978_MRI").exists(), "refused before anything is written"


@case("modality-differs-on-purpose")
def case_modality_differs_on_purpose(ctx):
    ctx.images_only("Dataset976_MRIOnPurpose", channels=("T1",))
    yield {}
    assert (ctx.preprocessed / "Dataset976_MRIOnPurpose" / "nnsslPretrainPlans.json").is_file()


@case("no-file-ending")
def case_no_file_ending(ctx):
    folder = ctx.images_only("Dataset975_NoEnding", cases=("phantom_000",))
    record = json.loads((folder / "dataset.json").read_text())
    del record["file_ending"]
    (folder / "dataset.json").write_text(json.dumps(record))
    yield {}


@case("plans-name-with-slash")
def case_plans_name_with_slash(ctx):
    yield {}
    assert not (ctx.preprocessed / UNL / "a").exists()


@case("2d-image-in-3d-set")
def case_2d_image_in_3d_set(ctx):
    folder = ctx.images_only("Dataset973_OneFlat")
    path = folder / "imagesTr" / "phantom_001_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    flat = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[image.GetSize()[2] // 2])  # a real 2D file
    flat.SetSpacing(image.GetSpacing()[:2])
    sitk.WriteImage(flat, str(path))
    yield {}
    assert _written(ctx, "Dataset973_OneFlat") == [f"phantom_00{i}{e}" for i in (0, 2)
                                                    for e in (".b2nd", ".pkl", "_seg.b2nd")]


@case("disk-full-prepare")
def case_disk_full_prepare(ctx):
    """The first case's blosc2 file is a link to /dev/full, placed in the staging folder once nnssl_prepare made
    it: blosc2's own write gets a real ENOSPC (and keeps no errno)."""
    from nnssl_plugin.data import prepare

    ctx.images_only("Dataset974_FullDisk")
    real = prepare.resumable_staging

    def staging_with_a_full_case_file(*args, **kwargs):
        staging, done = real(*args, **kwargs)
        (staging / "phantom_000.b2nd").symlink_to("/dev/full")
        return staging, done

    ctx.monkeypatch.setattr(prepare, "resumable_staging", staging_with_a_full_case_file)
    yield {}
    assert not (ctx.preprocessed / "Dataset974_FullDisk" / "nnsslPretrainPlans.json").exists()
    assert not (ctx.preprocessed / "Dataset974_FullDisk" / "nnsslPretrainPlans_3d_fullres").exists()


@case("pretrain-dataset-not-prepared")
def case_pretrain_dataset_not_prepared(ctx):
    ctx.images_only("Dataset987_Raw", cases=("phantom_000",))
    yield {}


@case("pretrain-configuration-not-in-plans")
def case_pretrain_configuration_not_in_plans(ctx):
    yield {}


def _tiny_plans(ctx) -> None:
    """Plans 'nnsslCatalogueTiny' for 990: 3d_cpu with a 1-voxel axis (on 3d_cpu's data)."""
    path = ctx.preprocessed / UNL / "nnsslCatalogueTiny.json"
    if path.exists():
        return
    plans = json.loads((ctx.preprocessed / UNL / "nnsslPretrainPlans.json").read_text())
    plans["plans_name"] = "nnsslCatalogueTiny"
    plans["configurations"]["3d_cpu_thin"] = {"inherits_from": "3d_cpu", "patch_size": [1, 48, 48]}
    path.write_text(json.dumps(plans, indent=2))


@case("moco-one-case")
def case_moco_one_case(ctx):
    if not (ctx.preprocessed / "Dataset993_OneCase").is_dir():
        ctx.images_only("Dataset993_OneCase", cases=("phantom_000",))
        assert prepare_cli.main(["-d", "993", "-t", "991", "-c", "3d_cpu", "-np", "1"]) == 0
    yield {}


@case("invalid-recipe")
def case_invalid_recipe(ctx):
    calls = ctx.stub_training()
    yield {}
    assert not calls


@case("probe-without-eval-target")
def case_probe_without_eval_target(ctx):
    calls = ctx.stub_training()
    yield {}
    assert not calls and not ctx.results.exists()


@case("probe-under-ddp")
def case_probe_under_ddp(ctx):
    calls = ctx.stub_training()
    yield {}
    assert not calls and not ctx.results.exists()


@case("too-small-for-local-grid")
def case_too_small_for_local_grid(ctx):
    _tiny_plans(ctx)
    yield {}


@case("continue-without-checkpoint")
def case_continue_without_checkpoint(ctx):
    calls = ctx.stub_training()
    yield {}
    assert len(calls) == 1 and calls[0][1]["continue_training"] is True


@case("moco-resumed-as-moco-zca")
def case_moco_resumed_as_moco_zca(ctx):
    """The moco_zca run folder holds a checkpoint of a moco run (its trainer_name; the recipe matches, so only the
    method tells them apart): --c stops in load_checkpoint, before any tensor is loaded or any step is trained."""
    from nnssl_plugin.config import default_recipe

    fold = ctx.results / UNL / "nnsslPretrainer_moco_zca_1epochs_1iters__nnsslPretrainPlans__3d_cpu" / "fold_all"
    fold.mkdir(parents=True)
    torch.save({"trainer_name": "nnsslPretrainer_moco_1epochs_1iters", "network_weights": {},
                "nnssl_recipe": default_recipe("moco").to_dict(), "current_epoch": 1},
               fold / "checkpoint_latest.pth")
    yield {}


@case("cuda-not-available")
def case_cuda_not_available(ctx):
    ctx.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    yield {}


@case("results-not-writable")
def case_results_not_writable(ctx):
    (ctx.tmp / "file.txt").write_text("a regular file")
    ctx.monkeypatch.setenv("nnUNet_results", str(ctx.tmp / "file.txt" / "results"))
    calls = ctx.stub_training()
    yield {}
    assert calls == [], "no training started"


def _target_arch(ctx) -> dict:
    plans = json.loads((ctx.preprocessed / LAB / "nnUNetPlans.json").read_text())
    return plans["configurations"]["3d_cpu"]["architecture"]


def _nnssl_checkpoint(path: Path, arch: dict, channels: int) -> None:
    """A MIC-DKFZ nnssl-style checkpoint (no weights needed: the architecture check comes first)."""
    torch.save({"network_weights": {}, "nnssl_adaptation_plan": {
        "architecture_plans": {"arch_class_name": arch["network_class_name"], "arch_kwargs": arch["arch_kwargs"]},
        "pretrain_num_input_channels": channels}}, path)


@case("architecture-differs")
def case_architecture_differs(ctx):
    arch = _target_arch(ctx)
    arch["arch_kwargs"] = {**arch["arch_kwargs"], "features_per_stage": [4, 8, 16, 32, 40]}
    _nnssl_checkpoint(ctx.tmp / "other.pth", arch, 1)
    yield {"<other.pth>": str(ctx.tmp / "other.pth")}


@case("input-channels-differ")
def case_input_channels_differ(ctx):
    _nnssl_checkpoint(ctx.tmp / "two_channels.pth", _target_arch(ctx), 2)
    yield {"<two_channels.pth>": str(ctx.tmp / "two_channels.pth")}


class _OpensAFile:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return open, (self.target, "w")


@case("crafted-pickle")
def case_crafted_pickle(ctx):
    torch.save({"network_weights": {}, "nnssl_adaptation_plan": _OpensAFile(str(ctx.tmp / "pwned"))},
               ctx.tmp / "evil.pth")
    yield {"<evil.pth>": str(ctx.tmp / "evil.pth")}
    assert not (ctx.tmp / "pwned").exists(), "the pickle was executed"
    assert not (ctx.preprocessed / LAB / "nnsslPlans_evil.json").exists()


@case("several-runs")
def case_several_runs(ctx):
    for name in ("nnsslPretrainer_moco_1epochs__nnsslPretrainPlans__3d_cpu",
                 "nnsslPretrainer_moco_2epochs__nnsslPretrainPlans__3d_cpu"):
        (ctx.results / UNL / name / "fold_all").mkdir(parents=True)
    yield {}


@case("no-run")
def case_no_run(ctx):
    yield {}


@case("other-package-versions")
def case_other_package_versions(ctx):
    """A real pretrained-weights file (the pretrainer's own writer, after initialize(); no training step), its
    recorded versions set to older nnunetv2 and torch."""
    from nnssl_plugin.pretrain import registry
    from nnssl_plugin.pretrained import write_pretrained_weights

    plans = json.loads((ctx.preprocessed / UNL / "nnsslPretrainPlans.json").read_text())
    dataset_json = json.loads((ctx.preprocessed / UNL / "dataset.json").read_text())
    trainer = registry.trainer_class("nnsslPretrainer_moco_1epochs_1iters")(
        {**plans, "continue_training": False}, "3d_cpu", "all", dataset_json, torch.device("cpu"))
    trainer.initialize()
    path = write_pretrained_weights(trainer.pretrained_payload(), ctx.tmp / "old_versions.pth")
    payload = torch.load(path, weights_only=True)
    payload["versions"].update(nnunetv2="2.5.0", torch="2.0.0")
    torch.save(payload, path)
    yield {"<old_versions.pth>": str(path)}
    exported = json.loads((ctx.preprocessed / LAB / "nnsslPlans_old.json").read_text())
    assert exported["pretrain_info"]["method"] == "moco"


@case("disk-full-export")
def case_disk_full_export(ctx):
    from nnssl_plugin import io_utils


    real = io_utils.RecordingFile
    ctx.monkeypatch.setattr(io_utils, "RecordingFile", lambda f: real(FullDiskFile(f)))
    yield {}
    left = sorted(p.name for p in (ctx.preprocessed / LAB).iterdir() if "nnsslPlans_full" in p.name)
    assert left == [], f"left behind: {left}"


def _private_target(ctx, exports: tuple[str, ...] = ()) -> None:
    """nnUNet_preprocessed pointed at a folder holding only the target's plans and dataset.json plus `exports`
    (random-init exports of 3d_cpu): the row sees exactly the exports it names, whatever earlier rows exported."""
    root = ctx.tmp / "nnUNet_preprocessed"
    (root / LAB).mkdir(parents=True)
    for name in ("nnUNetPlans.json", "dataset.json"):
        shutil.copy(ctx.preprocessed / LAB / name, root / LAB)
    ctx.monkeypatch.setenv("nnUNet_preprocessed", str(root))
    for plans_name in exports:
        assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", plans_name]) == 0
    ctx.monkeypatch.setenv("nnUNet_extTrainer", _ext_trainer_path())


@case("plans-without-pretrain-info")
def case_plans_without_pretrain_info(ctx):
    _private_target(ctx)
    yield {}
    assert not ctx.results.exists(), "refused before nnU-Net created any folder"


@case("several-exports-fit")
def case_several_exports_fit(ctx):
    _private_target(ctx, ("nnsslPlans_a", "nnsslPlans_b"))
    yield {}
    assert not ctx.results.exists(), "refused before nnU-Net created any folder"


@case("pretrained-weights-flag")
def case_pretrained_weights_flag(ctx):
    _private_target(ctx)
    yield {"<weights.pth>": str(ctx.tmp / "weights.pth")}
    assert not ctx.results.exists(), "refused before nnU-Net created any folder"


def _ext_trainer_path() -> str:
    from nnssl_plugin.ext_trainers import ext_trainer_folder

    return str(ext_trainer_folder())


def _damaged_export(ctx, plans_name: str, damage: Callable[[Path], None]) -> Iterator[dict[str, str]]:
    plans = ctx.random_export(plans_name)
    damage(ctx.preprocessed / LAB / plans["pretrain_info"]["weights"])
    ctx.monkeypatch.setenv("nnUNet_extTrainer", _ext_trainer_path())
    yield {}


@case("weights-missing")
def case_weights_missing(ctx):
    yield from _damaged_export(ctx, "nnsslPlans_gone", lambda p: p.unlink())


@case("weights-truncated")
def case_weights_truncated(ctx):
    yield from _damaged_export(ctx, "nnsslPlans_cut", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))


@case("weights-wrong-sha256")
def case_weights_wrong_sha256(ctx):
    yield from _damaged_export(ctx, "nnsslPlans_swapped", lambda p: torch.save({"format": "nnssl_export/1"}, p))


@case("weights-oversized")
def case_weights_oversized(ctx):
    yield from _damaged_export(ctx, "nnsslPlans_huge", lambda p: os.truncate(p, 1 << 30))  # sparse: no disk used


@case("export-plans-name-with-slash")
def case_export_plans_name_with_slash(ctx):
    yield {}
    assert not (ctx.preprocessed / "nnsslPlans_up.json").exists()


@case("ext-trainer-unset")
def case_ext_trainer_unset(ctx):
    yield {}


@case("env-check-ext-trainer-unset")
def case_env_check_ext_trainer_unset(ctx):
    Path(os.environ["nnUNet_results"]).mkdir(parents=True, exist_ok=True)  # every folder there: one line is left
    yield {}


# ----- nnssl_probe: every row fails before any feature is computed ---------------------------------------------------
for _probe_row in ("probe-random-without-levels", "probe-unknown-levels-like", "probe-unknown-source",
                   "probe-plans-without-pretrain-info", "probe-fold-not-in-splits", "probe-unlabelled-target",
                   "probe-weight-decay-zero", "probe-cuda-not-available", "probe-train-cases-out-of-range"):
    @case(_probe_row)
    def case_without_setup(ctx):
        yield {}


def _labelled_copy(ctx, name: str, cases: int | None = None, labels: int | None = None) -> None:
    """A preprocessed copy of the labelled target as `name` (no splits file): its first `cases` cases, and
    dataset.json naming only labels 0 … `labels` − 1 (the segmentations keep all of theirs)."""
    folder = ctx.preprocessed / name
    if folder.exists():
        return
    source = ctx.preprocessed / LAB
    keep = sorted(p.name[:-4] for p in (source / "nnUNetPlans_3d_fullres").glob("*.pkl"))[:cases]
    (folder / "nnUNetPlans_3d_fullres").mkdir(parents=True)
    for case_id in keep:
        for f in (source / "nnUNetPlans_3d_fullres").glob(f"{case_id}[._]*"):
            shutil.copy(f, folder / "nnUNetPlans_3d_fullres")
    shutil.copy(source / "nnUNetPlans.json", folder)
    record = json.loads((source / "dataset.json").read_text())
    if labels is not None:
        record["labels"] = {k: v for k, v in record["labels"].items() if v < labels}
    (folder / "dataset.json").write_text(json.dumps(record))


@case("probe-too-few-cases-no-splits")
def case_probe_too_few_cases_no_splits(ctx):
    _labelled_copy(ctx, "Dataset994_FewLabelled", cases=3)
    yield {}


@case("probe-labels-outside-dataset-json")
def case_probe_labels_outside_dataset_json(ctx):
    _labelled_copy(ctx, "Dataset995_FewerLabels", labels=3)
    yield {}


@case("probe-run-without-weights")
def case_probe_run_without_weights(ctx):
    (ctx.tmp / "empty_run" / "fold_all").mkdir(parents=True)
    yield {"<empty_run>": str(ctx.tmp / "empty_run")}


@case("probe-architecture-differs")
def case_probe_architecture_differs(ctx):
    arch = _target_arch(ctx)
    arch["arch_kwargs"] = {**arch["arch_kwargs"], "features_per_stage": [4, 8, 16, 32, 40]}
    _nnssl_checkpoint(ctx.tmp / "other.pth", arch, 1)
    yield {"<other.pth>": str(ctx.tmp / "other.pth")}


# ----- the parametrised test ------------------------------------------------------------------------------------------
def _params() -> list:
    ids = [row.case_id for row in ROWS if row.case_id]
    if len(ids) != len(set(ids)):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{DOC.name}: case ids named by more than one row: {twice}")
    params = [pytest.param(row, None, id=row.case_id or row.node.split("::")[-1]) for row in ROWS]
    documented = set(ids)
    params += [pytest.param(None, case_id, id=case_id) for case_id in CASES if case_id not in documented]
    return params


def _test_function_exists(node: str) -> bool:
    path, _, name = node.partition("::")
    file = REPO / path
    if not file.is_file() or not name:
        return False
    tree = ast.parse(file.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


@pytest.mark.parametrize("row,undocumented", _params())
def test_bad_input(row: Row | None, undocumented: str | None, request, capsys):
    if row is None:
        pytest.fail(f"case '{undocumented}' has no row in {DOC.name}: document it or remove it")
    if row.case_id is None:  # checked by the test the row names
        assert _test_function_exists(row.node), f"{row.node} (named by '{row.input}') does not exist"
        return
    assert row.case_id in CASES, f"row '{row.input}' names {row.node}, but there is no case '{row.case_id}'"
    assert row.exit.isdigit(), f"row '{row.input}': a command's exit code, got {row.exit!r}"
    assert row.fragments, f"row '{row.input}' has no message fragment"
    ctx = request.getfixturevalue("ctx")
    steps = CASES[row.case_id](ctx)
    substitutions = next(steps)
    argv = shlex.split(row.command)
    argv = [substitutions.get(a, a) for a in argv]
    capsys.readouterr()  # what the set-up printed
    code = MAINS[argv[0]](argv[1:])
    out, err = capsys.readouterr()
    assert code == int(row.exit), f"exit code {code}, the table says {row.exit}\nstdout:\n{out}\nstderr:\n{err}"
    if argv[0] == "nnUNetv2_train":  # nnU-Net's command: its traceback's last line
        assert_fragments_in_order(err.strip().splitlines()[-1], row.fragments)
    elif code != 0:  # ours: exactly one line, '<prog>: error: <message>'
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{argv[0]}: error: "), f"not one error line:\n{err}"
        assert_fragments_in_order(lines[0], row.fragments)
    else:  # stdout, then stderr (warnings)
        assert_fragments_in_order(out + err, row.fragments)
    next(steps, None)  # the case's checks of what is (not) left behind


# ----- library behaviours the table points at ------------------------------------------------------------------------
class _Cases:
    """What TwoViewDataLoader reads of an nnU-Net dataset (`identifiers`, `load_case`), over in-memory arrays."""

    def __init__(self, cases: dict[str, np.ndarray]):
        self.cases = cases
        self.identifiers = sorted(cases)

    def load_case(self, key: str):
        return self.cases[key], None, None, {"class_locations": {}}


def _labels() -> LabelManager:
    return LabelManager({"background": 0}, regions_class_order=None)


def test_a_case_smaller_than_the_patch_is_zero_padded_and_sampled_inside():
    np.random.seed(0)
    shape, patch = (5, 9, 7), (8, 16, 16)
    data = np.random.default_rng(0).uniform(1.0, 2.0, (1, *shape)).astype(np.float32)  # no 0 inside the case
    loader = TwoViewDataLoader(_Cases({"small": data}), 3, patch, _labels(), num_voxels=64)
    for _ in range(4):
        batch = next(loader)
        assert batch["view1"].shape == (3, 1, *patch) == batch["view2"].shape
        assert ((batch["view1"] != 0).sum(dim=(1, 2, 3, 4)) == np.prod(shape)).all(), "the whole case, 0 around it"
        case_voxels = []
        for v in ("1", "2"):
            voxels = batch["voxels" + v].numpy()
            j = batch["voxel_batch"].numpy()
            mirror, start = batch["mirror" + v].numpy()[j], batch["start" + v].numpy()[j]
            index = np.where(mirror, np.array(patch) - 1 - voxels, voxels)
            case_voxels.append(start + index)
        assert np.array_equal(case_voxels[0], case_voxels[1]), "both views name the same case voxels"
        assert ((case_voxels[0] >= 0) & (case_voxels[0] < np.array(shape))).all(), "sampled inside the case only"


def test_a_crop_with_nan_names_the_case():
    data = np.ones((1, 5, 9, 7), dtype=np.float32)
    data[0, 2, 4, 3] = np.nan  # the case is smaller than the patch: every crop holds this voxel
    loader = TwoViewDataLoader(_Cases({"case_with_nan": data}), 2, (8, 16, 16), _labels())
    with pytest.raises(NnsslError) as error:
        next(loader)
    assert_fragments_in_order(str(error.value), row_for(f"{HERE}::test_a_crop_with_nan_names_the_case").fragments)


def test_a_full_disk_hidden_behind_a_runtime_error_is_named(tmp_path, monkeypatch):
    """Real torch.save into a file whose write raises ENOSPC: torch raises `RuntimeError: unexpected pos …` with
    the OSError only as its context; the line still names the folder and the space needed."""
    from nnssl_plugin import io_utils
    from nnssl_plugin.checkpoints import atomic_torch_save


    real = io_utils.RecordingFile
    monkeypatch.setattr(io_utils, "RecordingFile", lambda f: real(FullDiskFile(f)))
    with pytest.raises(NnsslError) as error:
        atomic_torch_save({"w": torch.zeros(30_000)}, tmp_path / "weights.pth")
    assert isinstance(error.value.__cause__, RuntimeError) and "unexpected pos" in str(error.value.__cause__)
    node = f"{HERE}::test_a_full_disk_hidden_behind_a_runtime_error_is_named"
    assert_fragments_in_order(str(error.value), row_for(node).fragments)
    assert list(tmp_path.iterdir()) == [], "no temp file left"
    monkeypatch.setattr(io_utils, "RecordingFile", real)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("unexpected pos 1 vs 2")))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # no OSError and space left: not called a full disk
        atomic_torch_save({"w": torch.zeros(3)}, tmp_path / "weights.pth")
