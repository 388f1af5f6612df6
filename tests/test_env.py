"""nnssl_env: export lines for unset nnU-Net folders only, and --check."""
from __future__ import annotations

import os

from nnssl_plugin.cli import env as env_cli
from nnssl_plugin.ext_trainers import ext_trainer_folder


def test_prints_exports_only_for_unset_variables(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("nnUNet_raw", "/my/raw")
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    monkeypatch.setenv("nnUNet_extTrainer", "/my/trainers")
    assert env_cli.main(["--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"export nnUNet_preprocessed={tmp_path / 'nnUNet_preprocessed'}",
                     f"export nnUNet_results={tmp_path / 'nnUNet_results'}",
                     f"export nnUNet_extTrainer=/my/trainers:{ext_trainer_folder()}"]


def test_ext_trainer_path_appends_ours_to_the_users_folders(monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_extTrainer", "/a")
    assert env_cli.main(["--ext-trainer-path"]) == 0
    assert capsys.readouterr().out.strip() == f"/a:{ext_trainer_folder()}"


def test_check_reports_each_missing_item_on_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("nnUNet_extTrainer", str(ext_trainer_folder()))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "missing"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    assert env_cli.main(["--check"]) == 1
    out = capsys.readouterr().err.splitlines()
    assert len(out) == 2
    assert out[0].startswith("nnssl_env: error: nnUNet_raw is not set")
    assert out[1].startswith(f"nnssl_env: error: nnUNet_preprocessed={tmp_path / 'missing'} does not exist")


def test_check_passes_when_everything_is_there(fresh_world, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join(["/my/trainers", f"{ext_trainer_folder()}/"]))
    assert env_cli.main(["--check"]) == 0
    assert capsys.readouterr().out.startswith("ok:")


FIX = "run: export nnUNet_extTrainer=$(nnssl_env --ext-trainer-path)"


def test_check_reports_an_unset_ext_trainer_with_the_fix(fresh_world, monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    assert env_cli.main(["--check"]) == 1
    out = capsys.readouterr().err.splitlines()
    assert out == [f"nnssl_env: error: nnUNet_extTrainer is not set, so nnU-Net cannot find the plugin's "
                   f"trainers; {FIX}"]


def test_check_reports_an_ext_trainer_without_the_plugins_folder(fresh_world, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_extTrainer", "/my/trainers")
    assert env_cli.main(["--check"]) == 1
    out = capsys.readouterr().err.splitlines()
    assert len(out) == 1 and out[0].startswith("nnssl_env: error: nnUNet_extTrainer=/my/trainers lacks the "
                                               "plugin's trainer "
                                               f"folder {ext_trainer_folder()}")
    assert out[0].endswith(FIX)


def test_the_printed_fix_makes_the_check_pass(fresh_world, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_extTrainer", "/my/trainers")
    assert env_cli.main(["--ext-trainer-path"]) == 0
    monkeypatch.setenv("nnUNet_extTrainer", capsys.readouterr().out.strip())
    assert env_cli.main(["--check"]) == 0
