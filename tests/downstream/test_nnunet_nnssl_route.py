"""nnU-Net's own nnssl route, run end to end both ways on the phantom (docs/NNSSL_ROUTE.md).

That route (`nnUNetv2_plan_like_dynamic` / `nnUNetv2_preprocess_like_nnssl`, then `nnUNetv2_train_pretrained` with
`PretrainedTrainer` / `DynamicPretrainedTrainer`) is in nnU-Net's master after the 2.8.1 release this plugin runs
on. The tests unpack a snapshot of it (MIC-DKFZ/nnUNet at 0e495086, Apache-2.0, not part of this repository) into a
temporary folder and run its commands in subprocesses with that folder first on PYTHONPATH: nothing is installed,
the plugin's own nnunetv2 stays the release. The archive is found through NNSSL_VENDOR_NNUNET (its path), else as
`shared/vendor/nnUNet-0e495086.tar.gz` beside one of the checkout's parent folders; without it the tests skip,
saying so.

Forward: an export of ours (conftest's `exported`: a 4-step `moco_zca` pretraining at `3d_cpu`, exported again onto
a plans file whose only configuration, `3d_fullres`, is the session's `3d_cpu`: the route's planners read
`3d_fullres` only, and nnU-Net's own `3d_fullres` of the phantom is no CPU size) planned by
`nnUNetv2_plan_like_dynamic`, fine-tuned 4 steps by `nnUNetv2_train_pretrained` through a test-only subclass of
`DynamicPretrainedTrainer` (tests/downstream/nnssl_route_trainers.py, copied into the unpacked copy: that command
looks trainers up there only) that saves the network right after the pretrained weights are loaded; every encoder
tensor of the export must be in it, bit for bit. In place of its final validation the trainer predicts the held-out
case from its raw image with nnU-Net's predictor (`nnUNetv2_predict` fails on that route's trainers).

Reverse: a checkpoint in nnssl's layout (the fixture of tests/downstream/test_nnssl_format.py: a CPU-size
ResidualEncoderUNet) read by `nnUNetv2_preprocess_like_nnssl` as it reads an OpenMind checkpoint, and the same file
through `nnssl_export --checkpoint` and our `nnUNetTrainerSSLInit` for 2 steps.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from conftest import World
from nnssl_plugin.checkpoints import safe_load

ARCHIVE = "nnUNet-0e495086.tar.gz"
ARCHIVE_VAR = "NNSSL_VENDOR_NNUNET"
LAB = "Dataset991_PhantomBTCV"
TEST_TRAINERS = Path(__file__).with_name("nnssl_route_trainers.py")
# the route's entry points, called as its console scripts would be (none is installed)
ENTRY = {"plan_like_dynamic": "nnunetv2.experiment_planning.like_nnssl:plan_like_dynamic_entrypoint",
         "preprocess_like_nnssl": "nnunetv2.experiment_planning.like_nnssl:preprocess_like_nnssl_entrypoint",
         "train_pretrained": "nnunetv2.run.run_training_from_pretrained:train_pretrained_entrypoint"}


def find_archive(start: Path = Path(__file__)) -> Path | None:
    """The snapshot's archive: $NNSSL_VENDOR_NNUNET, else shared/vendor/<ARCHIVE> in a parent folder of `start`
    (a checkout anywhere under the folder holding shared/)."""
    if os.environ.get(ARCHIVE_VAR):
        return Path(os.environ[ARCHIVE_VAR])
    for parent in start.resolve().parents:
        candidate = parent / "shared" / "vendor" / ARCHIVE
        if candidate.is_file():
            return candidate
    return None


def skip_reason(start: Path = Path(__file__)) -> str:
    return (f"nnU-Net's nnssl route needs the snapshot {ARCHIVE} (MIC-DKFZ/nnUNet master at 0e495086), found neither "
            f"through {ARCHIVE_VAR} nor as shared/vendor/{ARCHIVE} in a parent folder of {start.resolve().parent}: "
            f"set {ARCHIVE_VAR} to its path")


@pytest.fixture(scope="session")
def vendored(tmp_path_factory) -> Path:
    """The unpacked snapshot (the folder to put first on PYTHONPATH), with the test trainers copied in; unpacked
    once per session. Tests list it before their worlds, so that without the archive they skip before building."""
    archive = find_archive()
    if archive is None:
        pytest.skip(skip_reason())
    if not archive.is_file():
        pytest.fail(f"{ARCHIVE_VAR}={archive} is not a file")
    root = tmp_path_factory.mktemp("vendored")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    (folder,) = [p for p in root.iterdir() if (p / "nnunetv2" / "__init__.py").is_file()]
    shutil.copy(TEST_TRAINERS, folder / "nnunetv2" / "training" / "nnUNetTrainer" / "pretraining")
    return folder


@pytest.fixture
def tidy_991(world):
    """Removes afterwards what a test wrote into the session world's Dataset991 folder (plans files that carry
    `pretrain_info`, weights, the route's preprocessed data): tests that copy that folder count the exports in it
    (tests/downstream/test_train_without_p_e2e.py). nnU-Net's splits_final.json stays (the same for every test)."""
    folder = world.preprocessed / LAB
    before = set(folder.iterdir())
    yield
    for path in set(folder.iterdir()) - before:
        if path.name == "splits_final.json":
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def test_the_archive_is_found_through_the_variable_or_a_parent_folders_shared_vendor(tmp_path, monkeypatch):
    monkeypatch.delenv(ARCHIVE_VAR, raising=False)
    checkout = tmp_path / "ci" / "clone" / "tests" / "downstream" / "test_x.py"
    if not any((p / "shared" / "vendor" / ARCHIVE).is_file() for p in tmp_path.parents):  # pytest's temp folder
        assert find_archive(checkout) is None
    assert skip_reason(checkout).endswith(f"in a parent folder of {checkout.parent}: set {ARCHIVE_VAR} to its path")
    archive = tmp_path / "shared" / "vendor" / ARCHIVE
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"")
    assert find_archive(checkout) == archive
    monkeypatch.setenv(ARCHIVE_VAR, str(tmp_path / "elsewhere.tar.gz"))
    assert find_archive(checkout) == tmp_path / "elsewhere.tar.gz"  # the variable wins (and must name a file)


def route(world: World, vendored: Path, command: str, *args: str) -> subprocess.CompletedProcess:
    """One of the route's commands, with the snapshot first on PYTHONPATH, against the world's folders."""
    module, function = ENTRY[command].split(":")
    env = {**world.env, "PYTHONPATH": os.pathsep.join([str(vendored), *filter(None, [os.environ.get("PYTHONPATH")])])}
    code = f"import sys; from {module} import {function} as f; sys.argv = [{command!r}] + sys.argv[1:]; f()"
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                            cwd=world.root)
    if result.returncode != 0:
        raise AssertionError(f"{command} {args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


ROUTE_BASE = "nnsslRoutePlans"  # 991's plans with one configuration, 3d_fullres: the session's 3d_cpu
RUN = "nnsslPretrainer_moco_zca_1epochs_4iters_seed0__nnsslPretrainPlans__3d_cpu"  # conftest.exported's pretraining


def write_route_base_plans(world: World) -> dict:
    """991's nnUNetPlans with `3d_fullres` replaced by the session's `3d_cpu` (resolved; its data is 3d_fullres's,
    already preprocessed) and every other configuration dropped: the route's planners read `3d_fullres` only, and
    nnU-Net's own 3d_fullres of the phantom is no CPU size."""
    from nnssl_plugin.plans import resolve_configuration

    plans = json.loads((world.preprocessed / LAB / "nnUNetPlans.json").read_text())
    small = {**plans, "plans_name": ROUTE_BASE,
             "configurations": {"3d_fullres": resolve_configuration(plans, "3d_cpu")}}
    (world.preprocessed / LAB / f"{ROUTE_BASE}.json").write_text(json.dumps(small, indent=2))
    return small


@pytest.mark.slow
def test_an_export_of_ours_through_nnunets_own_nnssl_route(vendored, exported, tidy_991):
    world = exported
    base = write_route_base_plans(world)
    exported_line = world.run("nnssl_export", "-d", "990", "-m", "moco_zca", "-t", "991", "-p", ROUTE_BASE, "-c",
                              "3d_fullres", "--run", RUN, "--plans-name", "nnsslPlans_route")
    line = [x for x in exported_line.stdout.splitlines() if x.startswith("nnU-Net's own nnssl route")]
    assert line == ["nnU-Net's own nnssl route (nnUNetv2_train_pretrained) loads encoder.stages and drops moco_zca's "
                    "whitening (docs/NNSSL_ROUTE.md)"]
    folder = world.preprocessed / LAB
    weights = folder / "nnsslPlans_route_weights.pth"
    payload = safe_load(weights)
    assert payload["nnunet_nnssl_route"]["drops"] == ["whitening"] and payload["whitening"] is not None

    route(world, vendored, "plan_like_dynamic", "-d", "991", "-n", "ours", "-pc", str(weights), "-pl", ROUTE_BASE,
          "-np", "1")
    plans = json.loads((folder / "ptPlans_dynamic__ours.json").read_text())
    assert list(plans["configurations"]) == ["3d_fullres"]  # the route's planners write nothing else
    assert plans["pretrain_info"]["key_to_encoder"] == "encoder.stages"

    trainer = "DynamicPretrainedTrainer_nnsslTest"
    # fold 1: one held-out case (of 6) to predict
    result = route(world, vendored, "train_pretrained", "991", "3d_fullres", "1", "-p", "ptPlans_dynamic__ours",
                   "-tr", trainer, "-device", "cpu")
    out = world.root / "nnUNet_results" / LAB / f"{trainer}__ptPlans_dynamic__ours__3d_fullres" / "fold_1"
    log = "".join(p.read_text() for p in out.glob("training_log_*.txt"))
    assert "Loaded Network (with dynamic adaptation)" in log, result.stdout[-2000:]

    initial = torch.load(out / "initial_state.pth", weights_only=True)
    ours = payload["network_weights"]
    encoder = [k for k in ours if k.startswith("encoder.")]
    # per encoder convolution: conv weight and bias, norm weight and bias, each also under its all_modules alias
    assert len(encoder) == 8 * sum(base["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
                                   ["n_conv_per_stage"])
    assert [k for k in encoder if not torch.equal(initial[k], ours[k])] == []
    # what it does not load: the decoder is its own fresh initialisation (the export's is another random draw)
    decoder = [k for k in ours if k.startswith("decoder.") and k.endswith("conv.weight")
               and not k.startswith("decoder.encoder.")]
    assert decoder and all(not torch.equal(initial[k], ours[k]) for k in decoder)
    assert not any("whitening" in k for k in initial)
    trained = safe_load(out / "checkpoint_final.pth")
    assert trained["current_epoch"] == 1 and any(not torch.equal(trained["network_weights"][k], ours[k])
                                                 for k in encoder)  # the 4 steps moved the encoder

    # predict: nnU-Net's predictor from the raw image of fold 1's held-out case, run by the route trainer in place of
    # its final validation (nnUNetv2_predict fails on that route's trainers: docs/NNSSL_ROUTE.md)
    import SimpleITK as sitk

    held_out = json.loads((folder / "splits_final.json").read_text())[1]["val"]
    labels = {int(k) for k in json.loads((world.raw / LAB / "dataset.json").read_text())["labels"].values()}
    assert held_out and f"predicted {len(held_out)} held-out case(s)" in log
    for case in held_out:
        image = sitk.ReadImage(str(world.raw / LAB / "imagesTr" / f"{case}_0000.nii.gz"))
        predicted = sitk.ReadImage(str(out / "predicted" / f"{case}.nii.gz"))
        assert predicted.GetSize() == image.GetSize() and predicted.GetSpacing() == image.GetSpacing()
        assert set(sitk.GetArrayFromImage(predicted).ravel().tolist()) <= labels


# The route's trainer loading the planned weights as its initialize() does (PretrainedTrainer.load_pretrained_weights
# with the plans' pretrain_info), without training: the fixture's recommended patch (160^3, as OpenMind's) is no
# CPU size. Run in a subprocess with the snapshot first on PYTHONPATH.
ROUTE_LOAD = """
import json, sys, torch
from nnunetv2.training.nnUNetTrainer.pretraining.pretrainedTrainer import PretrainedTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
plans, dataset_json = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
pm = PlansManager(plans); cm = pm.get_configuration("3d_fullres"); info = plans["pretrain_info"]
net = PretrainedTrainer.build_network_architecture(cm.network_arch_class_name, cm.network_arch_init_kwargs,
    cm.network_arch_init_kwargs_req_import, cm.patch_size, 1, pm.get_label_manager(dataset_json).num_segmentation_heads,
    enable_deep_supervision=False)
net, _ = PretrainedTrainer.load_pretrained_weights(net, info["checkpoint_path"], info["pt_num_in_channels"], 1,
    info["pt_used_patchsize"], cm.patch_size, info["key_to_encoder"], info["key_to_stem"],
    tuple(info["keys_to_in_proj"]), info["key_to_lpe"])
torch.save(net.state_dict(), sys.argv[3])
"""


@pytest.mark.slow
def test_an_nnssl_layout_checkpoint_through_the_routes_planner_and_through_ours(vendored, world_resenc, tidy_991,
                                                                               tmp_path, monkeypatch):
    from test_nnssl_format import _nnssl_checkpoint

    from nnssl_plugin.export import build_planned_network, matches_prefixes
    from nnssl_plugin.ext_trainers import with_ext_trainer_folder
    from nnssl_plugin.plans import resolve_configuration

    folder = world_resenc.preprocessed / LAB
    plans = json.loads((folder / "nnUNetResEncUNetMPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    arch = resolve_configuration(plans, "3d_cpu")["architecture"]
    torch.manual_seed(5)
    pretrained = build_planned_network(plans, "3d_cpu", 1, dataset_json).state_dict()
    checkpoint = tmp_path / "checkpoint_final.pth"
    _nnssl_checkpoint(checkpoint, pretrained, arch)  # nnssl's layout, a CPU-size ResidualEncoderUNet

    # the route's planner, as for an OpenMind checkpoint (workflow B; the nnU-Net spacing kept: -am default_nnunet)
    route(world_resenc, vendored, "preprocess_like_nnssl", "-d", "991", "-n", "fixture", "-pc", str(checkpoint),
          "-am", "default_nnunet", "-np", "1")
    (written,) = folder.glob("ptPlans__fixture____*.json")
    planned = json.loads(written.read_text())
    base = json.loads((folder / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]
    assert list(planned["configurations"]) == ["3d_fullres"]
    configuration = planned["configurations"]["3d_fullres"]
    # the known differences: every channel z-scored (the phantom's CT normalisation is lost), the checkpoint's
    # architecture and recommended patch instead of the target's plans
    assert base["normalization_schemes"] == ["CTNormalization"]
    assert configuration["normalization_schemes"] == ["ZScoreNormalization"]
    assert configuration["architecture"]["network_class_name"] == "ResidualEncoderUNet"
    assert configuration["patch_size"] == [160, 160, 160] and configuration["spacing"] == base["spacing"]
    info = planned["pretrain_info"]
    assert info["checkpoint_path"] == str(checkpoint) and info["key_to_stem"] == "encoder.stem"
    loaded = tmp_path / "route_loaded.pth"
    env = {**world_resenc.env, "PYTHONPATH": str(vendored)}
    subprocess.run([sys.executable, "-c", ROUTE_LOAD, str(written), str(folder / "dataset.json"), str(loaded)],
                   env=env, check=True, capture_output=True)
    route_state = torch.load(loaded, weights_only=True)
    encoder = [k for k in pretrained if k.startswith(("encoder.stem.", "encoder.stages."))]
    assert encoder and [k for k in encoder if not torch.equal(route_state[k], pretrained[k])] == []

    # the same file through ours: exported onto the ResEnc-M plans' 3d_cpu and fine-tuned 2 steps by SSLInit
    world_resenc.run("nnssl_export", "-t", "991", "-c", "3d_cpu", "-p", "nnUNetResEncUNetMPlans", "--checkpoint",
                     str(checkpoint), "--plans-name", "nnsslPlans_routefixture", "--overwrite")
    monkeypatch.setenv("nnUNet_extTrainer", with_ext_trainer_folder(None))
    # fold 1: one held-out case (of 6) for the final validation, exported by one worker process (their start is
    # most of a CPU test's validation)
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    trainer = "nnUNetTrainerSSLInit_1epochs_2iters_noTTA"
    world_resenc.run("nnUNetv2_train", "991", "3d_cpu", "1", "-tr", trainer, "-p", "nnsslPlans_routefixture",
                     "-device", "cpu")
    out = world_resenc.root / "nnUNet_results" / LAB / f"{trainer}__nnsslPlans_routefixture__3d_cpu" / "fold_1"
    log = "".join(p.read_text() for p in out.glob("training_log_*.txt"))
    # ours loads the checkpoint's decoder too (nnssl's layout carries it), the route's trainers the encoder only
    prefixes = safe_load(folder / "nnsslPlans_routefixture_weights.pth")["pretrained_prefixes"]
    assert prefixes == ["decoder.stages", "decoder.transpconvs", "encoder.stages", "encoder.stem"]
    n = len([k for k in pretrained if matches_prefixes(k, prefixes)])
    assert f"(nnssl): {n} pretrained tensors under {prefixes}" in log
    assert safe_load(out / "checkpoint_final.pth")["current_epoch"] == 1
