"""`nnssl_demo_data`: write the CT phantom demo datasets (unlabelled and labelled) into nnUNet_raw."""
from __future__ import annotations

import argparse
import time

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_demo_data"


def build_parser() -> argparse.ArgumentParser:
    from nnssl_plugin.datasets.phantom import PhantomConfig

    d = PhantomConfig()
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--unlabelled-id", type=int, default=990, help="dataset id of the images-only set (default 990)")
    p.add_argument("--labelled-id", type=int, default=991, help="dataset id of the labelled set (default 991)")
    p.add_argument("--num-unlabelled", type=int, default=24, help="cases in the unlabelled set (default 24)")
    p.add_argument("--num-labelled", type=int, default=12, help="cases in the labelled set (default 12)")
    p.add_argument("--shape", type=int, nargs=3, default=list(d.shape), metavar=("Z", "Y", "X"),
                   help=f"volume size in voxels (default {' '.join(map(str, d.shape))})")
    p.add_argument("--spacing", type=float, nargs=3, default=list(d.spacing), metavar=("Z", "Y", "X"),
                   help=f"nominal voxel spacing in mm, jittered per case (default {' '.join(map(str, d.spacing))})")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing phantom datasets with these ids")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnssl_plugin.datasets.demo_data import write_phantom_dataset
    from nnssl_plugin.datasets.phantom import PhantomConfig

    if min(args.shape) < 16:
        raise NnsslError(f"--shape {args.shape} is too small; every axis needs at least 16 voxels")
    if args.num_unlabelled < 1 or args.num_labelled < 1:
        raise NnsslError("--num-unlabelled and --num-labelled must be at least 1")
    if args.unlabelled_id == args.labelled_id:
        raise NnsslError("--unlabelled-id and --labelled-id must differ")
    config = PhantomConfig(shape=tuple(args.shape), spacing=tuple(args.spacing))
    start = time.time()
    for dataset_id, n, labelled in ((args.unlabelled_id, args.num_unlabelled, False),
                                    (args.labelled_id, args.num_labelled, True)):
        folder = write_phantom_dataset(dataset_id, n, labelled, args.seed, config, args.overwrite)
        print(f"wrote {folder} ({n} cases, {'labelled' if labelled else 'images only'}, "
              f"{time.time() - start:.1f} s)")
    return 0
