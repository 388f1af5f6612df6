"""`nnssl_prepare`: preprocess an images-only dataset with a labelled target dataset's nnU-Net plans."""
from __future__ import annotations

import argparse
import sys
import time

from nnssl_plugin.errors import cli_entry

PROG = "nnssl_prepare"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__ + " Labels of the unlabelled dataset, if it has "
                                "any, are ignored.")
    p.add_argument("-d", required=True, help="the unlabelled (pretraining) dataset, id or name, in nnUNet_raw")
    p.add_argument("-t", required=True, help="the labelled target dataset, id or name, already planned with "
                                             "nnUNetv2_plan_and_preprocess")
    p.add_argument("-c", default="3d_fullres", help="configuration of the target's plans (default 3d_fullres); "
                                                    "configurations inheriting from it share the data")
    p.add_argument("-p", default="nnUNetPlans", help="the target's plans identifier (default nnUNetPlans)")
    p.add_argument("--plans-name", default="nnsslPretrainPlans",
                   help="name of the copied plans in the unlabelled dataset (default nnsslPretrainPlans, which "
                        "nnssl_pretrain -p defaults to)")
    p.add_argument("-np", type=int, default=None,
                   help="worker processes (default: $nnUNet_def_n_proc, else min(8, cores))")
    p.add_argument("--overwrite", action="store_true", help="replace plans and data this command wrote before")
    p.add_argument("--other-normalization", action="store_true",
                   help="prepare even though the unlabelled set's channel names ask for another normalisation than "
                        "the target's plans (e.g. MRI names on a CT target): its images are normalised as the "
                        "target's, on purpose")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnssl_plugin.data.prepare import default_num_processes, prepare_unlabelled
    from nnssl_plugin.plans import check_plans_name

    check_plans_name(args.plans_name)

    start = time.time()
    result = prepare_unlabelled(args.d, args.t, args.c, args.p, args.plans_name,
                                args.np if args.np is not None else default_num_processes(), args.overwrite,
                                other_normalization=args.other_normalization,
                                warn=lambda line: print(f"{PROG}: WARNING: {line}", file=sys.stderr))
    print(f"prepared {len(result.written)} case(s) in {time.time() - start:.1f} s: {result.output_folder}; "
          f"plans {result.plans_file}")
    if len(result.written) == 1:  # allowed: nnU-Net's loader samples cases with replacement
        print(f"{PROG}: WARNING: {result.dataset_name} has a single case: every pretraining view will come from "
              f"that one image; add more images to imagesTr and rerun with --overwrite for useful pretraining",
              file=sys.stderr)
    return 0
