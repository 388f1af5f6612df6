"""nnssl_sweep keeps nnU-Net's output (a log file per run), shows a progress line per run, and docs/USAGE.md documents
every flag and argparse's exit code 2 for a malformed command line. nnUNetv2_train is a stand-in script here."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from nnssl_plugin import paths
from nnssl_plugin.cli import sweep as sweep_cli

ROOT = Path(__file__).resolve().parents[2]
DATASET = "Dataset991_Fake"

FAKE_TRAIN = """\
import json, os, sys
from pathlib import Path
dataset, configuration, fold = sys.argv[1:4]
trainer, plans = sys.argv[sys.argv.index("-tr") + 1], sys.argv[sys.argv.index("-p") + 1]
print(f"stdout line of {trainer} fold {fold}")
print(f"stderr line of {trainer} fold {fold}", file=sys.stderr)
if os.environ.get("FAKE_FAIL") == trainer:
    print("RuntimeError: the GPU fell over", file=sys.stderr)
    sys.exit(3)
out = Path(os.environ["nnUNet_results"]) / "Dataset991_Fake" / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"
(out / "validation").mkdir(parents=True)
dice = 0.5 if "Scratch" in trainer else 0.6
(out / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": dice}}))
"""


@pytest.fixture
def fake_sweep(fresh_world, tmp_path, monkeypatch):
    """A planned-looking target (plans, an export's plans, 6 ground-truth cases) and a stand-in nnUNetv2_train."""
    folder = fresh_world.preprocessed / DATASET
    (folder / "gt_segmentations").mkdir(parents=True)
    for i in range(6):
        (folder / "gt_segmentations" / f"case_{i:03d}.nii.gz").write_bytes(b"")
    (folder / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    for plans in ("nnUNetPlans", "nnsslPlans_fake"):
        (folder / f"{plans}.json").write_text("{}")
    script = tmp_path / "nnUNetv2_train"
    script.write_text(f"#!{sys.executable}\n" + FAKE_TRAIN)
    script.chmod(0o755)
    monkeypatch.setattr(paths, "console_script", lambda name: str(script))
    return fresh_world


ARGS = ["-d", "991", "-c", "3d_cpu", "--plans", "nnsslPlans_fake", "-n", "1", "--repeats", "1", "-device", "cpu"]


def test_each_run_gets_a_log_with_nnunets_whole_output_and_a_progress_line(fake_sweep, capsys):
    out = fake_sweep.root / "sweep"
    assert sweep_cli.main([*ARGS, "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    logs = sorted((out / "logs").glob("*.log"))
    assert [p.name for p in logs] == ["nnUNetTrainerSSLInit__nnsslPlans_fake__3d_cpu__fold_5.log",
                                      "nnUNetTrainerSSLScratch__nnUNetPlans__3d_cpu__fold_5.log"]
    for log, trainer in zip(logs, ("nnUNetTrainerSSLInit", "nnUNetTrainerSSLScratch")):
        text = log.read_text()
        assert f"stdout line of {trainer} fold 5" in text and f"stderr line of {trainer} fold 5" in text
        assert text.startswith("==> ") and text.rstrip().endswith("<== exit code 0")
    assert re.fullmatch(r"\[1/2\] fake N=1 repeat 0: nnUNetv2_train 991 3d_cpu 5 -tr nnUNetTrainerSSLInit "
                        r"-p nnsslPlans_fake -device cpu \(log: .*fold_5\.log\)", printed[0])
    assert re.fullmatch(r"\[1/2\] finished in \d+ s: mean Dice 0\.6000", printed[1])
    assert printed[2].startswith("[2/2] scratch N=1 repeat 0: ")
    assert re.fullmatch(r"\[2/2\] finished in \d+ s: mean Dice 0\.5000", printed[3])
    assert not any("stdout line" in line for line in printed), "without --verbose the console shows progress only"


def test_verbose_also_shows_nnunets_output(fake_sweep, capsys):
    assert sweep_cli.main([*ARGS, "--baseline", "none", "--verbose", "-o", str(fake_sweep.root / "s")]) == 0
    printed = capsys.readouterr().out
    assert "stdout line of nnUNetTrainerSSLInit fold 5" in printed
    assert "stderr line of nnUNetTrainerSSLInit fold 5" in printed


def test_a_failed_run_is_one_line_naming_its_log_and_the_last_output_line(fake_sweep, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "nnUNetTrainerSSLScratch")
    out = fake_sweep.root / "sweep"
    assert sweep_cli.main([*ARGS, "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    log = out / "logs" / "nnUNetTrainerSSLScratch__nnUNetPlans__3d_cpu__fold_5.log"
    assert len(err) == 1 and "failed with exit code 3 (RuntimeError: the GPU fell over)" in err[0]
    assert f"its output is in {log}" in err[0] and "rerun nnssl_sweep to continue" in err[0]
    assert "RuntimeError: the GPU fell over" in log.read_text()
    monkeypatch.delenv("FAKE_FAIL")
    assert sweep_cli.main([*ARGS, "-o", str(out)]) == 0  # the rerun continues; the failed attempt's log is kept
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[1/2] done already: ") and printed[1].startswith("[2/2] scratch")
    assert log.read_text().count("==> ") == 2


@pytest.mark.parametrize("argv", [["-c", "3d_cpu", "-n", "1"], ["-d", "991", "-n", "x"],
                                  ["-d", "991", "-n", "1", "--baseline", "random"]],
                         ids=["missing_-d", "non_integer_-n", "unknown_baseline"])
def test_a_malformed_command_line_exits_2_with_argparse_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep_cli.main(argv)
    assert exit_info.value.code == 2 and "usage: nnssl_sweep" in capsys.readouterr().err


def _readme_sweep_synopsis() -> str:
    readme = (ROOT / "docs" / "USAGE.md").read_text()
    start = readme.index("- **`nnssl_sweep ")
    return readme[start:readme.index("\n\n", start)]


def test_usage_documents_every_sweep_flag_and_both_exit_codes():
    synopsis = _readme_sweep_synopsis()
    flags = [flag for action in sweep_cli.build_parser()._actions for flag in action.option_strings
             if flag not in ("-h", "--help")]
    undocumented = [flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", synopsis)]
    assert undocumented == []
    assert "exit code 2" in synopsis and "exit code 1" in synopsis
