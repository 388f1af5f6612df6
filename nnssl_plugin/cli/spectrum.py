"""`nnssl_spectrum`: sorted singular spectra and effective ranks of pooled bottleneck embeddings, per checkpoint."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_spectrum"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, allow_abbrev=False)
    p.add_argument("-d", required=True, help="dataset whose preprocessed cases give the patches (held out from "
                                             "pretraining, e.g. the labelled target)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans of -d (default nnUNetPlans)")
    p.add_argument("--checkpoints", nargs="+", required=True,
                   help="ssl_weights.pth / checkpoint_*.pth of our runs, exports, or MIC-DKFZ nnssl files")
    p.add_argument("--patches", type=int, default=128, help="number of patches (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patch positions and the random reference")
    p.add_argument("--no-random", action="store_true", help="leave out the freshly initialised reference")
    p.add_argument("-o", default="nnssl_spectrum", help="output folder (default ./nnssl_spectrum)")
    return p


def run(args: argparse.Namespace) -> int:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnssl_plugin.io_utils import atomic_write_json, load_json
    from nnssl_plugin.paths import find_dataset_name, preprocessed_folder
    from nnssl_plugin.plans import load_plans, resolve_configuration
    from nnssl_plugin.plots import plot_spectrum
    from nnssl_plugin.spectrum import measure_checkpoints, sample_patches

    dataset = find_dataset_name(args.d, in_raw=False)
    plans = load_plans(dataset, args.p)
    configuration = resolve_configuration(plans, args.c)
    folder = preprocessed_folder() / dataset / configuration["data_identifier"]
    if not folder.is_dir():
        raise NnsslError(f"{folder} not found; preprocess {dataset} for configuration '{args.c}' first")
    dataset_json = load_json(preprocessed_folder() / dataset / "dataset.json")
    pm = PlansManager(plans)
    channels = determine_num_input_channels(pm, pm.get_configuration(args.c), dataset_json)
    if args.patches < 2:
        raise NnsslError("--patches must be at least 2 (an effective rank needs two embeddings)")
    patches = sample_patches(str(folder), configuration["patch_size"], args.patches, args.seed)
    results = measure_checkpoints([Path(c) for c in args.checkpoints], plans, args.c, dataset_json, channels,
                                  patches, args.seed, include_random=not args.no_random)
    out = Path(args.o)
    out.mkdir(parents=True, exist_ok=True)
    plot_spectrum({m.name: m.spectrum for m in results}, {m.name: m.effective_rank for m in results},
                  out / "spectrum.png", title=f"pooled bottleneck of {args.patches} patches of {dataset} ({args.c})\n"
                                              f"each curve divided by its largest value", normalise=True)
    atomic_write_json(out / "spectrum.json", {"dataset": dataset, "configuration": args.c, "patches": args.patches,
                                              "seed": args.seed, "results": [
                                                  {"name": m.name, "effective_rank": m.effective_rank,
                                                   "singular_values": m.spectrum.tolist()} for m in results]})
    print(f"| representation | effective rank (of {results[0].embeddings.shape[1]} dims) |")
    print("| --- | --- |")
    for m in results:
        print(f"| {m.name} | {m.effective_rank:.2f} |")
    print(f"plot: {out / 'spectrum.png'}; values: {out / 'spectrum.json'}")
    return 0


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
