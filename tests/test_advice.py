"""Advice that sends the user the right way: each case a new user met (issue 28) gets one line naming the right fix,
not a fix that is wrong for their situation (days of GPU, re-exporting an export, planning the unlabelled set)."""
from __future__ import annotations

import json
import shutil

from nnssl_plugin.cli import export as export_cli
from nnssl_plugin.cli import prepare as prepare_cli
from nnssl_plugin.cli import pretrain as pretrain_cli

LAB = "Dataset991_PhantomBTCV"
UNLAB = "Dataset990_PhantomUnlabelled"


def _err(main, argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_export_without_c_after_a_3d_cpu_run_names_the_run_s_configuration(in_world, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    run = results / UNLAB / "nnsslPretrainer_moco_zca_3epochs_10iters__nnsslPretrainPlans__3d_cpu" / "fold_all"
    run.mkdir(parents=True)
    monkeypatch.setenv("nnUNet_results", str(results))
    code, err = _err(export_cli.main, ["-d", "990", "-m", "moco_zca", "-t", "991"], capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "pass -c 3d_cpu" in err and "nnssl_export -d 990 -m moco_zca -t 991 -c 3d_cpu" in err
    assert "nnssl_pretrain" not in err


def test_export_without_any_run_still_names_the_pretraining(in_world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "empty_results"))
    code, err = _err(export_cli.main, ["-d", "990", "-m", "hier", "-t", "991", "-c", "3d_cpu"], capsys)
    assert code == 1 and "run nnssl_pretrain -d 990 -m hier -c 3d_cpu first" in err


def test_pretrained_weights_given_an_export_s_own_file_says_to_use_its_plans(tmp_path):
    from nnssl_plugin.nnunet_trainers.ssl_trainers import nnUNetTrainerSSLInit

    target = tmp_path / LAB
    target.mkdir()
    (target / "nnsslPlans_hier.json").write_text(json.dumps(
        {"plans_name": "nnsslPlans_hier", "pretrain_info": {"weights": "nnsslPlans_hier_weights.pth"}}))
    weights = target / "nnsslPlans_hier_weights.pth"
    weights.write_bytes(b"never read")
    line = nnUNetTrainerSSLInit.pretrained_weights_refusal(str(weights), {"plans_name": "nnUNetPlans",
                                                                          "dataset_name": LAB}, "3d_cpu")
    assert "-p nnsslPlans_hier" in line and "--checkpoint" not in line


def test_pretrained_weights_given_another_file_names_the_export_route(tmp_path):
    from nnssl_plugin.nnunet_trainers.ssl_trainers import export_plans_of

    other = tmp_path / "model_final.pth"
    other.write_bytes(b"never read")
    assert export_plans_of(str(other)) is None
    orphan = tmp_path / "nnsslPlans_x_weights.pth"  # named like an export, but no plans name it
    orphan.write_bytes(b"never read")
    assert export_plans_of(str(orphan)) is None


def test_prepare_with_the_ids_swapped_says_so(in_world, capsys):
    code, err = _err(prepare_cli.main, ["-d", "991", "-t", "990"], capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "look swapped" in err and "nnssl_prepare -d 990 -t 991" in err
    assert "nnUNetv2_plan_and_preprocess -d 990" not in err


def test_prepare_with_a_wrong_target_names_t_not_d_and_no_demo_generator(in_world, capsys):
    code, err = _err(prepare_cli.main, ["-d", "990", "-t", "977"], capsys)
    assert code == 1 and "check -t" in err and "labelled target" in err
    assert "nnssl_demo_data" not in err and "check -d" not in err


def test_pretrain_on_the_labelled_id_names_the_roles(in_world, capsys):
    code, err = _err(pretrain_cli.main, ["-d", "991", "-m", "hier", "-c", "3d_cpu", "-device", "cpu"], capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "labelled" in err and "unlabelled" in err and "-t 991" in err
    assert "nnssl_prepare -d 991" not in err


def _small_unlabelled(world, name: str) -> None:
    folder = world.raw / name
    (folder / "imagesTr").mkdir(parents=True)
    for case in ("phantom_000", "phantom_001"):
        shutil.copy(world.raw / UNLAB / "imagesTr" / f"{case}_0000.nii.gz", folder / "imagesTr")
    shutil.copy(world.raw / UNLAB / "dataset.json", folder / "dataset.json")


def test_prepare_2d_after_3d_adds_the_2d_data_and_keeps_the_3d(in_world, capsys):
    _small_unlabelled(in_world, "Dataset986_TwoConfigs")
    out = in_world.preprocessed / "Dataset986_TwoConfigs"
    try:
        assert prepare_cli.main(["-d", "986", "-t", "991", "-np", "1"]) == 0
        assert prepare_cli.main(["-d", "986", "-t", "991", "-c", "2d", "-np", "1"]) == 0
        assert sorted(p.name for p in (out / "nnsslPretrainPlans_2d").glob("*.pkl")) == \
            ["phantom_000.pkl", "phantom_001.pkl"]
        assert len(list((out / "nnsslPretrainPlans_3d_fullres").glob("*.pkl"))) == 2
        code, err = _err(prepare_cli.main, ["-d", "986", "-t", "991", "-c", "2d", "-np", "1"], capsys)
        assert code == 1 and "nnsslPretrainPlans_2d already exists; pass --overwrite" in err
        first = (out / "nnsslPretrainPlans_2d" / "phantom_000.pkl").stat().st_mtime_ns
        assert prepare_cli.main(["-d", "986", "-t", "991", "-c", "2d", "-np", "1", "--overwrite"]) == 0
        assert (out / "nnsslPretrainPlans_2d" / "phantom_000.pkl").stat().st_mtime_ns != first
    finally:
        shutil.rmtree(in_world.raw / "Dataset986_TwoConfigs", ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def test_a_run_shorter_than_the_warm_up_says_so_once_in_one_line():
    from nnssl_plugin.schedules import recipe_lr, warmup_line

    line = warmup_line(1e-2, 100, 11)
    assert line.startswith("WARNING: this run (11 steps) is shorter than the warm-up (100 steps)")
    assert f"ends at {recipe_lr(10, 11, 1e-2, 100, 'constant'):.3g} instead of the peak 0.01" in line  # 0.0011
    assert "WARNING" not in warmup_line(1e-2, 100, 1000) and "100 of 1000 steps" in warmup_line(1e-2, 100, 1000)
    assert "no warm-up" in warmup_line(3e-4, 0, 10)


def test_the_final_validation_s_mirroring_cost_is_said_with_the_variant_that_skips_it():
    from nnssl_plugin.nnunet_trainers.ssl_trainers import tta_cost_line

    line = tta_cost_line("nnUNetTrainerSSLInit_2epochs", (0, 1, 2))
    assert "8 network passes per window" in line and "nnUNetTrainerSSLInit_2epochs_noTTA" in line


def test_one_tensor_count_in_the_export_report_and_the_trainer_log():
    """The export counts the target network's tensors; the trainer's network also holds moco_zca's whitening, which
    comes from the export: both say the same "N pretrained tensors, M freshly initialised"."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    from nnssl_plugin.export import fresh_keys, transfer
    from nnssl_plugin.modules.whitening import attach_bottleneck_whitening

    def unet():
        return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 3, [2, 2], True, nn.InstanceNorm3d,
                             {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True})

    pretrained = {k: v for k, v in unet().state_dict().items() if k.startswith("encoder.")}
    _, report = transfer(unet().state_dict(), pretrained, ["encoder.stages"])
    trainer_network = attach_bottleneck_whitening(unet(), groups=2, channels_per_group=8)
    loaded = [*report.transferred, "bottleneck_whitening.mean", "bottleneck_whitening.w"]
    assert len(fresh_keys(trainer_network.state_dict(), loaded)) == len(report.fresh) > 0
    assert report.summary("moco_zca").startswith(f"{len(report.transferred)} pretrained tensors, ")
    assert report.summary("random").startswith(f"{len(report.transferred)} random-init tensors (the baseline, not "
                                               f"pretrained)")
