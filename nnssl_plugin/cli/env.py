"""`nnssl_env`: the environment lines nnU-Net and the plugin need, and `--check` for what is missing."""
from __future__ import annotations

import argparse
import os
import sys
import shlex
from pathlib import Path

from nnssl_plugin.errors import cli_entry
from nnssl_plugin.paths import NNUNET_VARIABLES

PROG = "nnssl_env"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Print `export` lines for the nnU-Net folder variables that "
                                "are not set (use: eval \"$(nnssl_env)\"), or check the environment.")
    p.add_argument("--root", default=None, help="parent folder for unset nnU-Net folders "
                                                "(default ~/nnUNet_data)")
    p.add_argument("--check", action="store_true", help="report what is missing, one line each; exit 1 if any")
    p.add_argument("--ext-trainer-path", action="store_true",
                   help="print the value for nnUNet_extTrainer: your folders (if any) plus the plugin's trainers")
    return p


def environment_lines(root: Path) -> list[str]:
    """`export` lines for each nnU-Net folder variable that is unset (set ones are left as the user has them), and
    nnUNet_extTrainer with the plugin's trainer folder appended to the user's own."""
    from nnssl_plugin.ext_trainers import ext_trainer_folder, with_ext_trainer_folder

    lines = [f"export {var}={shlex.quote(str(root / var))}" for var in NNUNET_VARIABLES if not os.environ.get(var)]
    current = os.environ.get("nnUNet_extTrainer")
    if str(ext_trainer_folder()) not in (current or "").split(os.pathsep):
        lines.append(f"export nnUNet_extTrainer={shlex.quote(with_ext_trainer_folder(current))}")
    return lines


def check_environment() -> list[str]:
    """Problems, one line each; empty when everything is in place."""
    problems = []
    for var in NNUNET_VARIABLES:
        value = os.environ.get(var)
        if not value:
            problems.append(f"{var} is not set (eval \"$(nnssl_env)\" sets it)")
        elif not Path(value).is_dir():
            problems.append(f"{var}={value} does not exist (mkdir -p it, or point {var} at your nnU-Net folder)")
        elif not os.access(value, os.W_OK):
            problems.append(f"{var}={value} is not writable")
    ext_problem = check_ext_trainer(os.environ.get("nnUNet_extTrainer"))
    if ext_problem:
        problems.append(ext_problem)
    for module in ("nnunetv2", "torch", "dynamic_network_architectures", "batchgeneratorsv2"):
        try:
            __import__(module)
        except ImportError as e:
            problems.append(f"python package {module} cannot be imported ({e}); pip install nnssl-plugin again")
    return problems


def check_ext_trainer(value: str | None) -> str | None:
    """One line if nnUNet_extTrainer (several folders joined by os.pathsep) lacks the plugin's trainer folder:
    nnU-Net then stops with "Could not find requested nnunet trainer"; None when it is there."""
    from nnssl_plugin.ext_trainers import ext_trainer_folder

    ours = ext_trainer_folder()
    fix = "export nnUNet_extTrainer=$(nnssl_env --ext-trainer-path)"
    if not value:
        return f"nnUNet_extTrainer is not set, so nnU-Net cannot find the plugin's trainers; run: {fix}"
    folders = [Path(p) for p in value.split(os.pathsep) if p]
    if not any(folder.resolve() == ours.resolve() for folder in folders):
        return (f"nnUNet_extTrainer={value} lacks the plugin's trainer folder {ours}, so nnU-Net cannot find the "
                f"plugin's trainers; run: {fix}")
    return None


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.ext_trainer_path:
        from nnssl_plugin.ext_trainers import with_ext_trainer_folder

        print(with_ext_trainer_folder(os.environ.get("nnUNet_extTrainer")))
        return 0
    if args.check:
        problems = check_environment()
        for line in problems:  # on stderr, as every command's bad-input lines (the exit code is 1)
            print(f"{PROG}: error: {line}", file=sys.stderr)
        if not problems:
            print("ok: nnU-Net folders set and writable, nnUNet_extTrainer holds the plugin's trainers, packages "
                  "importable")
        return 1 if problems else 0
    root = Path(args.root).expanduser() if args.root else Path.home() / "nnUNet_data"
    for line in environment_lines(root.resolve()):
        print(line)
    return 0
