"""Screen of the MoCo family's global vector: can it tell held-out crops apart? For each network (a pretraining
run's checkpoint, or random init of a method with a seed) and each largest view shift, M held-out view pairs of the
labelled target (the MoCo views of `moco_views`, only `max_shift` varied; batch i drawn in an isolated stream seeded
from (seed, i), so every network sees the same crops), both views through the query encoder in eval mode, and per
readout (`methods/moco/readout.py`: the last stage's output pooled by avg/max/std, the last conv's output before its
InstanceNorm pooled by avg/std, and the projector's output q as the method trains it) the two numbers of
`ops/pair_separability.py`: B/W (0.5 = the two views of a crop as unrelated as two different crops) and top-1
(nearest partner after per-channel standardisation, the other crops of its case left out as MoCo's training masks
same-case keys; chance about 1/M).

    .venv/bin/python studies/moco_screen.py --work-dir /work/bench --random moco:0 moco:1 \\
        --runs <fold_all> ... --target 991 -c 3d_cpu --shifts 0.25 0.1 0 --batches 40 -o screen.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from study_steps import use_work_dir

from nnssl_plugin.config import METHODS, method_config
from nnssl_plugin.finished_run import build_run_network, heldout_view_batches, load_run_network
from nnssl_plugin.heldout import evaluating
from nnssl_plugin.methods.moco.readout import READOUTS, captured_output, last_conv, readouts
from nnssl_plugin.ops.pair_separability import between_within_ratio, pair_top1, top1_chance

UNLABELLED = "Dataset990_PhantomUnlabelled"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", required=True, help="a study folder holding nnUNet_preprocessed with the datasets")
    p.add_argument("--runs", nargs="*", default=[], help="fold_all folders of MoCo-family runs")
    p.add_argument("--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--random", nargs="*", default=[], metavar="METHOD:SEED", help="random init of METHOD, seed SEED")
    p.add_argument("--dataset", default=UNLABELLED, help="the prepared dataset of the random inits")
    p.add_argument("--target", default="991")
    p.add_argument("-c", default="3d_cpu")
    p.add_argument("-p", default="nnsslPretrainPlans")
    p.add_argument("--shifts", type=float, nargs="+", default=[0.25, 0.1, 0.0])
    p.add_argument("--batches", type=int, default=40, help="held-out batches (pairs = batches x batch size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out crops")
    p.add_argument("-o", required=True, help="the JSON to write")
    return p.parse_args(argv)


@torch.no_grad()
def screen(loaded, target: str, configuration: str, shift: float, batches: int, seed: int) -> dict:
    network = loaded.network
    options = {**loaded.family.views(loaded.config, len(loaded.patch) == 2, loaded.plans, loaded.configuration),
               "max_shift": shift}
    pairs = heldout_view_batches(target, loaded, configuration, options, batches, seed)
    a: dict[str, list[torch.Tensor]] = {}
    b: dict[str, list[torch.Tensor]] = {}
    stage = network.encoder.stages[-1]
    cases = torch.cat([batch["case_ids"] for batch in pairs])  # (M,): other crops of a case are no candidates
    with evaluating(network):
        for batch in pairs:
            for first, second, into in (("view1", "view2", a), ("view2", "view1", b)):
                with captured_output(stage) as out, captured_output(last_conv(stage)) as pre:
                    q = network.pair_embeddings(batch[first], batch[second])["q"]
                vectors = {**readouts(out[0], pre[0]), "projector q": q.float()}
                for name, v in vectors.items():
                    into.setdefault(name, []).append(v)
    result = {}
    for name in [*READOUTS, "projector q"]:
        va, vb = torch.cat(a[name]), torch.cat(b[name])
        result[name] = {"bw": between_within_ratio(va, vb), "top1": pair_top1(va, vb, cases),
                        "top1_any_crop": pair_top1(va, vb), "chance": top1_chance(cases, va.shape[0]),
                        "pairs": va.shape[0]}
    return result


def main(argv=None) -> int:
    args = parse(argv)
    use_work_dir(Path(args.work_dir).resolve())
    torch.set_num_threads(2)
    device = torch.device("cpu")
    networks = {}
    for spec in args.random:
        method, seed = spec.split(":")
        if method not in METHODS:
            sys.exit(f"unknown method '{method}'")
        torch.manual_seed(int(seed))
        networks[f"random {method} seed {seed}"] = build_run_network(args.dataset, method, method_config(method),
                                                                     args.p, args.c, device)
    for run in args.runs:
        loaded = load_run_network(Path(run), args.p, args.c, device, args.checkpoint)
        networks[Path(run).resolve().parent.name.split("__")[0]] = loaded
    rows = []
    for name, loaded in networks.items():
        for shift in args.shifts:
            values = screen(loaded, args.target, args.c, shift, args.batches, args.seed)
            for readout, v in values.items():
                rows.append({"network": name, "shift": shift, "readout": readout, **v})
                print(f"| {name} | {shift:g} | {readout} | {v['bw']:.3f} | {v['top1']:.3f} (chance "
                      f"{v['chance']:.3f}; any crop {v['top1_any_crop']:.3f}) |", flush=True)
    Path(args.o).write_text(json.dumps({"batches": args.batches, "seed": args.seed, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
