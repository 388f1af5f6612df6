"""nnU-Net's own nnssl route, run end to end both ways on the phantom (docs/NNSSL_ROUTE.md).

That route (`nnUNetv2_plan_like_dynamic` / `nnUNetv2_preprocess_like_nnssl`, then `nnUNetv2_train_pretrained` with
`PretrainedTrainer` / `DynamicPretrainedTrainer`) is in nnU-Net's master after the 2.8.1 release this plugin runs
on. The tests unpack a snapshot of it (MIC-DKFZ/nnUNet at 0e495086, Apache-2.0, not part of this repository) into a
temporary folder and run its commands in subprocesses with that folder first on PYTHONPATH: nothing is installed,
the plugin's own nnunetv2 stays the release. The archive is found through NNSSL_VENDOR_NNUNET (its path), else as
`shared/vendor/nnUNet-0e495086.tar.gz` beside one of the checkout's parent folders; without it the tests skip,
saying so.

Forward: an export of ours (a 2-step `moco_zca` pretraining at `3d_fullres`, the only configuration that route's
planners write, on a phantom small enough that nnU-Net plans a CPU-size `3d_fullres`) planned by
`nnUNetv2_plan_like_dynamic`, fine-tuned 4 steps by `nnUNetv2_train_pretrained` through a test-only subclass of
`DynamicPretrainedTrainer` (tests/downstream/nnssl_route_trainers.py, copied into the unpacked copy: that command
looks trainers up there only) that saves the network right after the pretrained weights are loaded; every encoder
tensor of the export must be in it, bit for bit, and the trainer's final validation predicts the cases.

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

from conftest import BIN, World, make_world
from nnssl_plugin.checkpoints import safe_load

ARCHIVE = "nnUNet-0e495086.tar.gz"
ARCHIVE_VAR = "NNSSL_VENDOR_NNUNET"
LAB = "Dataset991_PhantomBTCV"
TEST_TRAINERS = Path(__file__).with_name("nnssl_route_trainers.py")
# the route's entry points, called as its console scripts would be (none is installed)
ENTRY = {"plan_like_dynamic": "nnunetv2.experiment_planning.like_nnssl:plan_like_dynamic_entrypoint",
         "preprocess_like_nnssl": "nnunetv2.experiment_planning.like_nnssl:preprocess_like_nnssl_entrypoint",
         "train_pretrained": "nnunetv2.run.run_training_from_pretrained:train_pretrained_entrypoint"}


def find_archive() -> Path | None:
    """The snapshot's archive: $NNSSL_VENDOR_NNUNET, else shared/vendor/<ARCHIVE> beside a parent folder."""
    if os.environ.get(ARCHIVE_VAR):
        return Path(os.environ[ARCHIVE_VAR])
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "vendor" / ARCHIVE
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def vendored(tmp_path_factory) -> Path:
    """The unpacked snapshot (the folder to put first on PYTHONPATH), with the test trainers copied in."""
    archive = find_archive()
    if archive is None:
        pytest.skip(f"nnU-Net's nnssl route needs the snapshot {ARCHIVE} (MIC-DKFZ/nnUNet master at 0e495086): set "
                    f"{ARCHIVE_VAR} to its path")
    if not archive.is_file():
        pytest.fail(f"{ARCHIVE_VAR}={archive} is not a file")
    root = tmp_path_factory.mktemp("vendored")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    (folder,) = [p for p in root.iterdir() if (p / "nnunetv2" / "__init__.py").is_file()]
    shutil.copy(TEST_TRAINERS, folder / "nnunetv2" / "training" / "nnUNetTrainer" / "pretraining")
    return folder


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


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> World:
    """Two 16x48x48 labelled phantoms (nnU-Net plans a 4-stage 3d_fullres with a 16x48x48 patch for them) and two
    unlabelled ones, prepared on those plans and pretrained with moco_zca at 3d_fullres for 2 steps, exported."""
    w = make_world(tmp_path_factory.mktemp("route_world"))
    w.run("nnssl_demo_data", "--num-unlabelled", "2", "--num-labelled", "2", "--shape", "16", "48", "48")
    w.run("nnUNetv2_plan_and_preprocess", "-d", "991", "-c", "3d_fullres", "-np", "1", "-npfp", "1")
    w.run("nnssl_prepare", "-d", "990", "-t", "991", "-c", "3d_fullres", "-np", "1")
    w.run("nnssl_pretrain", "-d", "990", "-m", "moco_zca", "-c", "3d_fullres", "-device", "cpu", "--epochs", "1",
          "--iters", "2", "--seed", "0")
    return w


@pytest.mark.slow
def test_an_export_of_ours_through_nnunets_own_nnssl_route(small_world, vendored):
    exported = small_world.run("nnssl_export", "-d", "990", "-m", "moco_zca", "-t", "991", "-c", "3d_fullres")
    line = [x for x in exported.stdout.splitlines() if x.startswith("nnU-Net's own nnssl route")]
    assert line == ["nnU-Net's own nnssl route (nnUNetv2_train_pretrained) loads encoder.stages and drops moco_zca's "
                    "whitening (docs/NNSSL_ROUTE.md)"]
    folder = small_world.preprocessed / LAB
    weights = folder / "nnsslPlans_moco_zca_weights.pth"
    payload = safe_load(weights)
    assert payload["nnunet_nnssl_route"]["drops"] == ["whitening"] and payload["whitening"] is not None

    route(small_world, vendored, "plan_like_dynamic", "-d", "991", "-n", "ours", "-pc", str(weights),
          "-pl", "nnUNetPlans", "-np", "1")
    plans = json.loads((folder / "ptPlans_dynamic__ours.json").read_text())
    assert list(plans["configurations"]) == ["3d_fullres"]  # the route's planners write nothing else
    assert plans["pretrain_info"]["key_to_encoder"] == "encoder.stages"

    trainer = "DynamicPretrainedTrainer_nnsslTest"
    result = route(small_world, vendored, "train_pretrained", "991", "3d_fullres", "all", "-p",
                   "ptPlans_dynamic__ours", "-tr", trainer, "-device", "cpu")
    out = small_world.root / "nnUNet_results" / LAB / f"{trainer}__ptPlans_dynamic__ours__3d_fullres" / "fold_all"
    log = "".join(p.read_text() for p in out.glob("training_log_*.txt"))
    assert "Loaded Network (with dynamic adaptation)" in log, result.stdout[-2000:]

    initial = torch.load(out / "initial_state.pth", weights_only=True)
    ours = payload["network_weights"]
    encoder = [k for k in ours if k.startswith("encoder.")]
    assert len(encoder) == 64  # 4 stages x 2 convolutions x (conv weight, bias; norm weight, bias) x 2 aliases
    assert [k for k in encoder if not torch.equal(initial[k], ours[k])] == []
    # what it does not load: the decoder is its own fresh initialisation (the export's is another random draw)
    decoder = [k for k in ours if k.startswith("decoder.") and k.endswith("conv.weight")
               and not k.startswith("decoder.encoder.")]
    assert decoder and all(not torch.equal(initial[k], ours[k]) for k in decoder)
    assert not any("whitening" in k for k in initial)
    trained = safe_load(out / "checkpoint_final.pth")
    assert trained["current_epoch"] == 1 and any(not torch.equal(trained["network_weights"][k], ours[k])
                                                 for k in encoder)  # the 4 steps moved the encoder

    # predict: the route trainer's final validation (nnU-Net's predictor on the two cases, nnUNetv2_predict fails
    # on that route's trainers: docs/NNSSL_ROUTE.md)
    import SimpleITK as sitk

    for case in ("phantom_000", "phantom_001"):
        image = sitk.ReadImage(str(small_world.raw / LAB / "imagesTr" / f"{case}_0000.nii.gz"))
        predicted = sitk.ReadImage(str(out / "validation" / f"{case}.nii.gz"))
        assert predicted.GetSize() == image.GetSize()
        labels = set(sitk.GetArrayFromImage(predicted).ravel().tolist())
        assert labels <= {int(k) for k in json.loads((small_world.raw / LAB / "dataset.json").read_text())
                          ["labels"].values()}


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
def test_an_nnssl_layout_checkpoint_through_the_routes_planner_and_through_ours(world_resenc, vendored, tmp_path,
                                                                               monkeypatch):
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
    trainer = "nnUNetTrainerSSLInit_1epochs_2iters_noTTA"
    world_resenc.run("nnUNetv2_train", "991", "3d_cpu", "0", "-tr", trainer, "-p", "nnsslPlans_routefixture",
                     "-device", "cpu")
    out = world_resenc.root / "nnUNet_results" / LAB / f"{trainer}__nnsslPlans_routefixture__3d_cpu" / "fold_0"
    log = "".join(p.read_text() for p in out.glob("training_log_*.txt"))
    # ours loads the checkpoint's decoder too (nnssl's layout carries it), the route's trainers the encoder only
    prefixes = safe_load(folder / "nnsslPlans_routefixture_weights.pth")["pretrained_prefixes"]
    assert prefixes == ["decoder.stages", "decoder.transpconvs", "encoder.stages", "encoder.stem"]
    n = len([k for k in pretrained if matches_prefixes(k, prefixes)])
    assert f"(nnssl): {n} pretrained tensors under {prefixes}" in log
    assert safe_load(out / "checkpoint_final.pth")["current_epoch"] == 1
