"""`nnssl_fewshot_splits`: add few-label folds (N training cases, fixed validation cases) to splits_final.json."""
from __future__ import annotations

import argparse
import sys

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_fewshot_splits"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, allow_abbrev=False)
    p.add_argument("-d", required=True, help="the labelled dataset (planned and preprocessed by nnU-Net)")
    p.add_argument("-n", type=int, nargs="+", required=True, help="numbers of labelled training cases")
    p.add_argument("--repeats", type=int, default=3, help="seeded draws per number (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnssl_plugin.fewshot import add_fewshot_folds, labelled_identifiers
    from nnssl_plugin.paths import find_dataset_name, preprocessed_folder

    if args.repeats < 1:
        raise NnsslError("--repeats must be at least 1")
    dataset = find_dataset_name(args.d, in_raw=False)
    folder = preprocessed_folder() / dataset
    identifiers = labelled_identifiers(folder)
    records = add_fewshot_folds(folder, identifiers, args.n, args.repeats, args.seed)
    print(f"{folder / 'splits_final.json'}: validation on {len(records[0]['val'])} fixed case(s)")
    for r in records:
        print(f"fold {r['fold']}: {r['n']} training case(s), repeat {r['repeat']}: {' '.join(r['train'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
