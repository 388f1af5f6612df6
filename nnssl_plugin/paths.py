"""nnU-Net's folder variables and dataset ids, read at call time with errors that name the fix."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from nnssl_plugin.errors import NnsslError

NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")


def nnunet_folder(variable: str) -> Path:
    """The folder an nnU-Net environment variable points at (it must be set; it may not exist yet)."""
    value = os.environ.get(variable)
    if not value:
        raise NnsslError(f"environment variable {variable} is not set; set it to a folder, e.g. run "
                         f"'eval \"$(nnssl_env)\"' (nnU-Net's documentation/setting_up_paths.md explains the three "
                         f"folders)")
    return Path(value)


def writable_folder(variable: str) -> Path:
    """The folder of an nnU-Net variable, created if missing and proven writable by creating (and removing) a temp
    file in it; raises NnsslError naming the variable, the path and the fix otherwise."""
    folder = nnunet_folder(variable)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".nnssl_write_test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = (e.strerror or type(e).__name__).lower()
        where = f": {e.filename}" if e.filename and str(e.filename) != str(folder) else ""
        raise NnsslError(f"{variable}={folder} is not writable ({reason}{where}); point {variable} at a folder you "
                         f"can write to, e.g. export {variable}=$HOME/nnUNet_data/{variable}") from None
    return folder


def raw_folder() -> Path:
    return nnunet_folder("nnUNet_raw")


def preprocessed_folder() -> Path:
    return nnunet_folder("nnUNet_preprocessed")


def results_folder() -> Path:
    return nnunet_folder("nnUNet_results")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name for a dataset: Dataset<3-digit id>_<name>."""
    if not 0 < int(dataset_id) < 1000:
        raise NnsslError(f"dataset id must be between 1 and 999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*", name):
        raise NnsslError(f"dataset name {name!r} must be letters, digits and '-' (nnU-Net splits on '_')")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _names_with_id(folder: Path, dataset_id: int) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir()
            if p.is_dir() and (m := _DATASET_RE.match(p.name)) and int(m.group(1)) == dataset_id}


def find_dataset_name(dataset: str | int, in_raw: bool = True, in_preprocessed: bool = True,
                      unprepared_hint: str | None = None, flag: str = "-d", role: str | None = None) -> str:
    """Resolve `-d` (an id like 990 or a full name like Dataset990_Phantom) to the dataset's folder name.

    Looks in nnUNet_raw and/or nnUNet_preprocessed, as nnU-Net does. Errors name where it looked. With
    `unprepared_hint` (a command with `{id}`), a dataset looked for only in nnUNet_preprocessed that exists only in
    nnUNet_raw gets an error naming that command instead. `flag` and `role` (e.g. "-t", "the labelled target planned
    with nnUNetv2_plan_and_preprocess") name the option the value came from in the errors.
    """
    text = str(dataset)
    if _DATASET_RE.match(text):
        return text
    try:
        dataset_id = int(text)
    except ValueError:
        raise NnsslError(f"{flag} {text!r} is neither a dataset id (e.g. 990) nor a name like "
                         f"Dataset990_Phantom") from None
    roots = []
    if in_raw:
        roots.append(("nnUNet_raw", raw_folder()))
    if in_preprocessed:
        roots.append(("nnUNet_preprocessed", preprocessed_folder()))
    names = set().union(*(_names_with_id(folder, dataset_id) for _, folder in roots))
    if not names and unprepared_hint and not in_raw and os.environ.get("nnUNet_raw"):
        in_raw_only = sorted(_names_with_id(raw_folder(), dataset_id))
        if in_raw_only:
            raise NnsslError(f"{in_raw_only[0]} is in nnUNet_raw but not in nnUNet_preprocessed; run "
                             f"{unprepared_hint.format(id=dataset_id)} first")
    if not names:
        where = " or ".join(f"{var} ({folder})" for var, folder in roots)
        fix = (f"check {flag}: it names {role}" if role else
               f"check {flag}, or convert the dataset first (nnssl_demo_data, nnssl_convert_btcv, ...)")
        raise NnsslError(f"unknown dataset id {dataset_id}: no Dataset{dataset_id:03d}_* folder in {where}; {fix}")
    if len(names) > 1:
        raise NnsslError(f"dataset id {dataset_id} is ambiguous: {', '.join(sorted(names))}; "
                         f"pass the full name with {flag} or remove one of them")
    return names.pop()


def check_id_free(dataset_id: int, name: str) -> None:
    """Refuse to create Dataset<id>_<name> when another dataset already uses that id."""
    wanted = dataset_folder_name(dataset_id, name)
    others = set()
    for variable in ("nnUNet_raw", "nnUNet_preprocessed"):
        if os.environ.get(variable):
            others |= _names_with_id(Path(os.environ[variable]), int(dataset_id)) - {wanted}
    if others:
        raise NnsslError(f"dataset id {dataset_id} is already used by {', '.join(sorted(others))}; "
                         f"choose another id with -d")


def console_script(name: str) -> str:
    """A console script of the environment this process runs in (a venv need not be on PATH), else of PATH."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise NnsslError(f"{name} not found next to {sys.executable} or on PATH; install nnunetv2 in this environment")
    return found
