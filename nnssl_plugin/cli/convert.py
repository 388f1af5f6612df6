"""`nnssl_convert_btcv` and `nnssl_convert_abdomenct1k`: public datasets into nnU-Net raw format."""
from __future__ import annotations

import argparse

from nnssl_plugin.errors import cli_entry


def _parser(prog: str, description: str, input_help: str, default_id: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("-i", required=True, help=input_help)
    p.add_argument("-d", type=int, default=default_id, help=f"dataset id to create (default {default_id})")
    p.add_argument("--symlink", action="store_true", help="link to the source files instead of copying them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of this id and name")
    return p


@cli_entry("nnssl_convert_btcv")
def main_btcv(argv: list[str] | None = None) -> int:
    args = _parser("nnssl_convert_btcv", "BTCV (Synapse multi-organ CT, 30 labelled scans, 13 organs) into "
                   "nnUNet_raw/Dataset<id>_BTCV.", "BTCV's RawData/Training folder (img/img0001.nii.gz, "
                   "label/label0001.nii.gz, ...)", 501).parse_args(argv)
    from nnssl_plugin.datasets.convert import convert_btcv

    folder = convert_btcv(args.i, args.d, link=args.symlink, overwrite=args.overwrite)
    print(f"wrote {folder}; next: nnUNetv2_plan_and_preprocess -d {args.d} --verify_dataset_integrity")
    return 0


@cli_entry("nnssl_convert_abdomenct1k")
def main_abdomenct1k(argv: list[str] | None = None) -> int:
    args = _parser("nnssl_convert_abdomenct1k", "A folder of CT volumes (e.g. AbdomenCT-1K) into an images-only "
                   "nnUNet_raw/Dataset<id>_AbdomenCT1K for pretraining.", "folder holding the CT volumes "
                   "(*.nii.gz)", 500).parse_args(argv)
    from nnssl_plugin.datasets.convert import convert_abdomenct1k

    folder = convert_abdomenct1k(args.i, args.d, link=args.symlink, overwrite=args.overwrite)
    print(f"wrote {folder}; next: nnssl_prepare -d {args.d} -t <your planned labelled dataset>")
    return 0
