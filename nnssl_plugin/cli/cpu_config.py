"""`nnssl_add_cpu_config`: add a small configuration (fewer features, smaller patch) to a plans file.

It inherits from an existing configuration, so it reuses that configuration's preprocessed data; tests, the demo
and benchmarks train on it, and it lets a user try the plugin on a laptop.
"""
from __future__ import annotations

import argparse

from nnssl_plugin.errors import BadArgument, NnsslError, cli_entry

PROG = "nnssl_add_cpu_config"
FLAGS = {"parent": "-c", "name": "--name", "feature_divisor": "--feature-divisor", "patch_scale": "--patch-scale",
         "patch_size": "--patch-size", "batch_size": "--batch-size"}  # add_cpu_configuration's keywords


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("-d", required=True, help="dataset id or name (its plans live in nnUNet_preprocessed)")
    p.add_argument("-c", default="3d_fullres", help="configuration to inherit from (default 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("--name", default="3d_cpu", help="name of the new configuration (default 3d_cpu)")
    p.add_argument("--feature-divisor", type=int, default=4, help="divide features per stage by this (default 4)")
    p.add_argument("--patch-scale", type=float, default=0.5,
                   help="scale the parent's patch by this, rounded to the network's stride (default 0.5)")
    p.add_argument("--patch-size", type=int, nargs="+", default=None, help="explicit patch size instead")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the parent's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing configuration of that name")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnssl_plugin.io_utils import atomic_write_json
    from nnssl_plugin.paths import find_dataset_name
    from nnssl_plugin.plans import add_cpu_configuration, load_plans, plans_path, resolve_configuration

    name = find_dataset_name(args.d, in_raw=False, in_preprocessed=True)
    plans = load_plans(name, args.p)
    if args.name in plans["configurations"] and not args.overwrite:
        raise NnsslError(f"plans '{args.p}' of {name} already have a configuration '{args.name}'; pass "
                         f"--overwrite to replace it or --name for another")
    try:
        new = add_cpu_configuration(plans, args.c, args.name, args.feature_divisor, args.patch_scale, args.patch_size,
                                    args.batch_size)
    except BadArgument as e:  # the library names its keyword; the user typed a flag
        raise e.for_flag(FLAGS.get(e.parameter, e.parameter)) from None
    atomic_write_json(plans_path(name, args.p), new)
    resolved = resolve_configuration(new, args.name)
    kwargs = resolved["architecture"]["arch_kwargs"]
    print(f"added configuration '{args.name}' to {plans_path(name, args.p)}: inherits '{args.c}', "
          f"features {kwargs['features_per_stage']}, patch {resolved['patch_size']}, "
          f"batch {resolved['batch_size']}, data '{resolved['data_identifier']}'")
    return 0
