"""Preprocess an images-only dataset with the *target's* nnU-Net plans (docs/ARCHITECTURE.md, "Data flow", step 4).

nnU-Net's own preprocessing needs labels (fingerprinting, integrity checks). Here each case goes through
nnU-Net's preprocessor (`run_case`'s image read, then `run_case_npy` with no segmentation: transpose, crop to
nonzero, normalise with the target's CT statistics, resample to the target's spacing; a 2D image is refused for a
3D configuration in between) and nnU-Net's blosc2 writer with the same chunking, so the
arrays equal what nnU-Net writes for the same image and nnU-Net's dataset and loader classes read them. The
target plans are copied into the unlabelled dataset under their own name (default `nnsslPretrainPlans`), so a
user's own plans for that dataset are never touched. Labels that the unlabelled dataset may have are ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnssl_plugin.data.jobs import WorkerDied, run_jobs
from nnssl_plugin.data.modality import check_modality
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.disk_space import full_disk_is_one_line
from nnssl_plugin.io_utils import atomic_write_json, load_json, publish_folder
from nnssl_plugin.paths import find_dataset_name, preprocessed_folder, raw_folder
from nnssl_plugin.plans import load_plans, plans_for_dataset, plans_path, resolve_configuration

DEFAULT_PLANS_NAME = "nnsslPretrainPlans"
MARKER = "nnssl_prepare"  # key that marks the dataset.json / fingerprint files this module wrote
CASE_DONE = ".nnssl_case.json"  # <case>.nnssl_case.json in the staging folder: the case's files are complete
STATE_FILE = "nnssl_prepare_state.json"  # in the staging folder: what it is being built for
CASE_FILES = (".b2nd", "_seg.b2nd", ".pkl", CASE_DONE)  # a finished case in the staging folder (nnU-Net's blosc2)


@dataclass
class PrepareResult:
    dataset_name: str
    output_folder: Path
    plans_file: Path
    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # image file -> reason


def list_image_cases(images_folder: Path, file_ending: str, num_channels: int) -> dict[str, list[str]]:
    """Case identifier -> its channel files (`<case>_XXXX<file_ending>`), checked for completeness."""
    if not images_folder.is_dir():
        raise NnsslError(f"{images_folder} not found; an nnU-Net raw dataset keeps its images in imagesTr")
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    cases: dict[str, dict[int, str]] = {}
    for path in sorted(images_folder.iterdir()):
        if not path.name.endswith(file_ending):
            continue
        match = pattern.match(path.name)
        if match is None:
            raise NnsslError(f"{path} has no channel suffix; nnU-Net raw images are named <case>_0000{file_ending}")
        cases.setdefault(match.group(1), {})[int(match.group(2))] = str(path)
    if not cases:
        raise NnsslError(f"{images_folder} holds no '*{file_ending}' images; convert the dataset into it first")
    out = {}
    for case, channels in cases.items():
        if sorted(channels) != list(range(num_channels)):
            raise NnsslError(f"case '{case}' has channel files {sorted(channels)} but the target's plans need "
                             f"channels {list(range(num_channels))} (_0000 ... _{num_channels - 1:04d})")
        out[case] = [channels[c] for c in range(num_channels)]
    return out


def _channel_names(dataset_json: dict) -> dict:
    return dataset_json.get("channel_names", dataset_json.get("modality", {}))


def single_slice(shape: tuple[int, ...], patch_dims: int) -> str | None:
    """Why an image of spatial `shape` (as read, z-y-x) cannot go into a configuration of `patch_dims` dimensions,
    or None: a 2D image (nnU-Net reads it as one slice) in a 3D configuration would be resampled into many identical
    slices."""
    if patch_dims == 3 and min(shape) == 1:
        return (f"a 2D image (shape {'x'.join(map(str, shape))}: one slice) in a 3D configuration would become "
                f"identical slices; remove it, or use 3D volumes")
    return None


def _sources(image_files: list[str]) -> list[list]:
    """What a finished case was made from: [path, size, mtime_ns] per channel file (a changed image is redone)."""
    return [[f, os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in image_files]


def _preprocess_case(identifier: str, image_files: list[str], out_stem: str, plans: dict, configuration: str,
                     dataset_json: dict) -> tuple[str, str | None, dict | None]:
    """Worker: preprocess and save one case, then mark it complete (`<out_stem>.nnssl_case.json`, written after
    nnU-Net's files, holding the fingerprint entries and the source files' sizes and times). Returns (identifier,
    error or None, fingerprint entries)."""
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    try:  # nnU-Net's run_case (read, then run_case_npy), with a look at the image in between
        data, properties = plans_manager.image_reader_writer_class().read_images(image_files)
    except Exception as e:  # noqa: BLE001 - unreadable/corrupt image: reported per file, other cases go on
        return identifier, f"{type(e).__name__}: {e}".splitlines()[0], None
    flat = single_slice(data.shape[1:], len(configuration_manager.patch_size))
    if flat:
        return identifier, flat, None
    try:
        data, seg, properties = preprocessor.run_case_npy(data, None, properties, plans_manager,
                                                          configuration_manager, dataset_json)
    except Exception as e:  # noqa: BLE001 - an image nnU-Net cannot preprocess: reported per file
        return identifier, f"{type(e).__name__}: {e}".splitlines()[0], None
    non_finite = int(data.size - np.count_nonzero(np.isfinite(data)))
    if non_finite:  # NaN/Inf voxels would make every loss that sees them NaN: skipped like an unreadable image
        return identifier, f"case {identifier} has {non_finite} NaN/Inf voxel(s) after preprocessing", None
    properties["class_locations"] = {}  # nnUNetDataLoader reads it; there is no foreground to oversample
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)  # the -1/0 nonzero mask, as nnU-Net stores it for test cases
    patch = tuple(configuration_manager.patch_size)
    blocks, chunks = comp_blosc2_params(data.shape, patch, data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    with full_disk_is_one_line(out_stem + ".b2nd", needed=data.nbytes + seg.nbytes, probe=True):  # blosc2: no errno
        nnUNetDatasetBlosc2.save_case(data, seg, properties, out_stem, chunks=chunks, blocks=blocks,
                                      chunks_seg=chunks_seg, blocks_seg=blocks_seg)
    backward = plans_manager.transpose_backward
    shape_after_crop = [int(s) for s in properties["shape_after_cropping_and_before_resampling"]]
    fingerprint = {
        "spacing": [float(s) for s in properties["spacing"]],
        "shape_after_crop": [shape_after_crop[i] for i in backward],
        "relative_size": float(np.prod(shape_after_crop) / np.prod(properties["shape_before_cropping"])),
    }
    atomic_write_json(Path(out_stem + CASE_DONE), {"fingerprint": fingerprint, "sources": _sources(image_files)})
    return identifier, None, fingerprint


def _state(plans: dict, configuration: str) -> dict:
    """What a staging folder is built for: the exact copied plans and the configuration."""
    text = json.dumps(plans, sort_keys=True)
    return {"configuration": configuration, "plans_sha256": hashlib.sha256(text.encode()).hexdigest()}


def resumable_staging(final: Path, state: dict, cases: dict[str, list[str]], log=print
                      ) -> tuple[Path, dict[str, dict]]:
    """The folder `.<final>.partial` to build `final` in, and {case: fingerprint} of the cases it already holds
    complete. An interrupted run's folder is kept when it was built for the same `state` (plans, configuration):
    its complete cases whose source files are unchanged are kept; every other file in it is removed. Otherwise
    the folder is made anew."""
    staging = final.with_name(f".{final.name}.partial")
    done: dict[str, dict] = {}
    if staging.is_dir():
        try:
            same = load_json(staging / STATE_FILE) == state
        except (ValueError, OSError):
            same = False
        if same:
            for marker in staging.glob(f"*{CASE_DONE}"):
                case = marker.name[:-len(CASE_DONE)]
                try:
                    record = load_json(marker)
                except (ValueError, OSError):
                    continue
                if case in cases and record.get("sources") == _sources(cases[case]):
                    done[case] = record["fingerprint"]
            keep = {STATE_FILE} | {f"{c}{suffix}" for c in done for suffix in CASE_FILES}
            for path in staging.iterdir():
                if path.name not in keep:  # unfinished cases, temp files of a killed write
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            if done:
                log(f"resuming: {len(done)} of {len(cases)} case(s) already preprocessed in {staging} (left by an "
                    f"interrupted run of this command)")
        else:
            log(f"{staging} was left by a run with other plans or configuration; starting over")
            shutil.rmtree(staging)
    if not staging.is_dir():
        staging.mkdir(parents=True)
        atomic_write_json(staging / STATE_FILE, state)
    return staging, done


def _publishable(staging: Path) -> None:
    """Remove the resume bookkeeping: what is left is exactly nnU-Net's data folder."""
    (staging / STATE_FILE).unlink()
    for marker in staging.glob(f"*{CASE_DONE}"):
        marker.unlink()


def _ours_or_missing(path: Path) -> bool:
    if not path.is_file():
        return True
    try:
        return MARKER in load_json(path)
    except (ValueError, OSError):
        return False


def _same_copy(plans_file: Path, target_name: str, target_plans: str) -> bool:
    """Whether plans this command wrote before are the copy of the same target plans: preparing another
    configuration (e.g. 2d after 3d_fullres) then only adds that configuration's data folder."""
    try:
        marker = load_json(plans_file).get(MARKER) or {}
    except (ValueError, OSError):
        return False
    return marker == {"target_dataset": target_name, "target_plans": target_plans}


def refuse_swapped_roles(dataset: str | int, target: str | int) -> None:
    """One line when -t is an images-only dataset: with -d labelled the ids are swapped; otherwise -t is not the
    labelled target (planning it would not help: it has no labels)."""
    from nnssl_plugin.dataset_roles import is_images_only, is_labelled

    if not is_images_only(target):
        return
    if is_labelled(dataset):
        raise NnsslError(f"the ids look swapped: -d {dataset} has labels and -t {target} is images only; -d names the "
                         f"unlabelled pretraining set, -t the labelled target planned with nnUNetv2_plan_and_preprocess"
                         f": nnssl_prepare -d {target} -t {dataset}")
    raise NnsslError(f"-t {target} is an images-only dataset; -t names the labelled target dataset (labelsTr, "
                     f"planned with nnUNetv2_plan_and_preprocess), whose plans the unlabelled -d {dataset} is "
                     f"preprocessed with")


def prepare_unlabelled(dataset: str | int, target: str | int, configuration: str = "3d_fullres",
                       target_plans: str = "nnUNetPlans", plans_name: str = DEFAULT_PLANS_NAME,
                       num_processes: int = 1, overwrite: bool = False, log=print, other_normalization: bool = False,
                       warn=None) -> PrepareResult:
    """Preprocess raw images-only `dataset` with `target`'s plans. See the module docstring.

    Writes into nnUNet_preprocessed/<dataset>/: `<plans_name>.json`, the data folder of the configuration
    (`<plans_name>_<config>`), and, unless the user already has their own, `dataset.json` and
    `dataset_fingerprint.json`. Raises NnsslError (after writing every readable case) if some images failed.
    Channel names asking for another normalisation than the target's plans are refused unless
    `other_normalization` (`data.modality`); `warn` (default `log`) gets that module's warning line.
    """
    refuse_swapped_roles(dataset, target)
    target_name = find_dataset_name(target, in_raw=False, in_preprocessed=True,
                                    unprepared_hint="nnUNetv2_plan_and_preprocess -d {id}", flag="-t",
                                    role="the labelled target dataset, planned with nnUNetv2_plan_and_preprocess")
    target_id = int(target_name[7:10])
    plans = load_plans(target_name, target_plans, plan_hint=f"nnUNetv2_plan_and_preprocess -d {target_id}")
    config = resolve_configuration(plans, configuration)
    target_json_path = preprocessed_folder() / target_name / "dataset.json"
    if not target_json_path.is_file():
        raise NnsslError(f"{target_json_path} not found; run nnUNetv2_plan_and_preprocess -d {target_id} first")
    target_channels = _channel_names(load_json(target_json_path))

    dataset_name = find_dataset_name(dataset, in_raw=True, in_preprocessed=False)
    if dataset_name == target_name:
        raise NnsslError(f"-d and -t are the same dataset ({dataset_name}); -d is the unlabelled pretraining set")
    raw = raw_folder() / dataset_name
    raw_json_path = raw / "dataset.json"
    if not raw_json_path.is_file():
        raise NnsslError(f"{raw_json_path} not found; an nnU-Net raw dataset needs a dataset.json "
                         f"(channel_names, file_ending), e.g. from nnssl_convert_abdomenct1k")
    raw_json = load_json(raw_json_path)
    if not isinstance(raw_json.get("file_ending"), str) or not raw_json["file_ending"]:
        raise NnsslError(f"{raw_json_path} has no 'file_ending' (nnU-Net's raw dataset.json names the images' "
                         f"ending, e.g. \"file_ending\": \".nii.gz\"); add it and rerun")
    channels = _channel_names(raw_json)
    if len(channels) != len(target_channels):
        raise NnsslError(f"{dataset_name} has {len(channels)} input channel(s) {list(channels.values())} but the "
                         f"target {target_name} has {len(target_channels)} {list(target_channels.values())}; "
                         f"give the unlabelled images the target's channels (same count and order) or choose a "
                         f"target with {len(channels)}")
    warning = check_modality(dataset_name, channels, target_name, target_channels, config["normalization_schemes"],
                             other_normalization)
    if warning:
        (warn or log)(warning)
    cases = list_image_cases(raw / "imagesTr", raw_json["file_ending"], len(target_channels))

    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    new_plans = plans_for_dataset(plans, dataset_name, plans_name)
    example = next(iter(cases.values()))[0]
    new_plans["image_reader_writer"] = determine_reader_writer_from_dataset_json(
        raw_json, example, allow_nonmatching_filename=True, verbose=False).__name__
    data_identifier = resolve_configuration(new_plans, configuration)["data_identifier"]

    out_root = preprocessed_folder() / dataset_name
    new_plans_file = plans_path(dataset_name, plans_name)
    data_folder = out_root / data_identifier
    if not _ours_or_missing(new_plans_file):
        raise NnsslError(f"{new_plans_file} exists and was not written by nnssl_prepare (a user's own plans are "
                         f"never replaced); choose another name with --plans-name")
    existing = [p for p in (new_plans_file, data_folder) if p.exists()
                and not (p == new_plans_file and _same_copy(p, target_name, target_plans))]
    if existing and not overwrite:
        raise NnsslError(f"{existing[0]} already exists; pass --overwrite to replace it (or choose another "
                         f"--plans-name)")
    new_plans[MARKER] = {"target_dataset": target_name, "target_plans": target_plans}

    dataset_json = dict(raw_json, labels={"background": 0}, numTraining=len(cases))
    dataset_json[MARKER] = {"target_dataset": target_name, "target_plans": target_plans,
                            "note": "images only; labels of the raw dataset, if any, are ignored"}
    out_root.mkdir(parents=True, exist_ok=True)
    staging, done = resumable_staging(data_folder, _state(new_plans, configuration), cases, log)
    jobs = [(case, files, str(staging / case), new_plans, configuration, dataset_json)
            for case, files in cases.items() if case not in done]
    log(f"preprocessing {len(jobs)} case(s) of {dataset_name} with {target_name}'s plans '{target_plans}' "
        f"({configuration}) into {data_folder}")
    result = PrepareResult(dataset_name, data_folder, new_plans_file, written=list(done))
    fingerprints = dict(done)

    def collect(outcome) -> None:
        identifier, error, fingerprint = outcome
        if error is None:
            result.written.append(identifier)
            fingerprints[identifier] = fingerprint
        else:
            result.failed[", ".join(cases[identifier])] = error

    try:
        run_jobs(_preprocess_case, jobs, num_processes, collect)
    except WorkerDied as e:
        raise NnsslError(f"a worker process died after {e.finished} of {e.total} case(s) of this run (usually out "
                         f"of memory: each worker holds one resampled case); the {len(result.written)} finished "
                         f"case(s) are kept in {staging}: rerun the same command to resume, with fewer workers "
                         f"(-np {max(1, num_processes // 2)})") from None
    except KeyboardInterrupt:
        log(f"interrupted: the {len(result.written)} finished case(s) are kept in {staging}; rerun the same command "
            f"to resume")
        raise
    if not result.written:
        shutil.rmtree(staging, ignore_errors=True)
        raise NnsslError(f"no case of {dataset_name} could be preprocessed; first failure: "
                         f"{next(iter(result.failed.items()))}; fix or remove the image file(s)")
    _publishable(staging)
    publish_folder(staging, data_folder)
    result.written = [c for c in cases if c in fingerprints]  # the raw dataset's order
    fingerprints = [fingerprints[c] for c in result.written]

    dataset_json["numTraining"] = len(result.written)
    if _ours_or_missing(out_root / "dataset.json"):
        atomic_write_json(out_root / "dataset.json", dataset_json)
    else:
        log(f"kept the existing {out_root / 'dataset.json'} (not written by nnssl_prepare)")
    if _ours_or_missing(out_root / "dataset_fingerprint.json"):
        atomic_write_json(out_root / "dataset_fingerprint.json", _fingerprint(fingerprints, plans, target_name))
    atomic_write_json(new_plans_file, new_plans)  # last: the plans appear only once their data is complete

    if result.failed:
        first, reason = next(iter(result.failed.items()))
        raise NnsslError(f"could not preprocess {len(result.failed)} of {len(cases)} case(s), skipped: {first} "
                         f"({reason}); the other {len(result.written)} cases were written to {data_folder}; fix or "
                         f"remove the image file(s) and rerun with --overwrite")
    return result


def _fingerprint(entries: list[dict], target_plans: dict, target_name: str) -> dict:
    """nnU-Net's dataset fingerprint for the unlabelled set. The intensity statistics are the target's: CT
    normalisation needs foreground voxels, which only the labelled target has."""
    return {
        "spacings": [e["spacing"] for e in entries],
        "shapes_after_crop": [e["shape_after_crop"] for e in entries],
        "foreground_intensity_properties_per_channel": target_plans["foreground_intensity_properties_per_channel"],
        "median_relative_size_after_cropping": float(np.median([e["relative_size"] for e in entries])),
        MARKER: {"intensity_properties_from": target_name},
    }


def default_num_processes() -> int:
    return max(1, int(os.environ.get("nnUNet_def_n_proc", min(8, os.cpu_count() or 1))))
