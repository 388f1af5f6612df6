"""The benchmark's report (benchmark.md, benchmark.json, benchmark.png in the results folder), rewritten after every step
from the step outputs that exist: per initialisation and level set the seed scores (probe mean Dice averaged over the
folds), every comparison as a paired difference over seeds with its 95 % interval and the difference the design
can detect (nnssl_plugin.paired), the seeds a δ of DELTA needs, the held-out pretext on common views, and the CPU
time of each kind of step."""
from __future__ import annotations

import json
import math
from pathlib import Path

from nnssl_plugin.evidence import mean_sd
from nnssl_plugin.paired import detectable_difference, paired, seeds_needed

DELTA = 0.02  # the margin fixed before the runs: the smallest probe-Dice difference the benchmark must detect
# (paired comparison of the pretraining seeds, 80 % power, two-sided α = 0.05)
RANDOM = "random"
# rows compared with MoCo v2: Hassanpour et al.'s components, the global-term candidates
AGAINST_MOCOV2 = ("mocov2_local", "mocov2_zca", "moco_zca", "mocov2_shift01", "mocov2_prenorm_shift01", "moco_regions")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def comparisons(methods: list[str], own_levels: dict[str, str], common: str) -> list[tuple[str, str, str, str]]:
    """(label, arm A, arm B, level set) for every comparison the benchmark reports, the decisions first: the
    papers' recipes against each other, today's, each paper recipe against today's, each ablation against its paper
    recipe, every row against random init, and across families on the common levels."""
    rows = []
    dense = [m for m in methods if own_levels[m] != common]
    for a, b in (("hier_paper", "voxel2vec_paper"), ("hier", "voxel2vec")):
        if a in methods and b in methods:
            rows.append((f"{a} − {b} (own levels)", a, b, own_levels[a]))
            rows.append((f"{a} − {b} (common levels)", a, b, common))
    if "moco_zca" in methods and "moco" in methods:
        rows.append(("moco_zca − moco", "moco_zca", "moco", common))
    for a, b in (("hier_paper", "hier"), ("voxel2vec_paper", "voxel2vec")):
        if a in methods and b in methods:
            rows.append((f"{a} − {b} (own levels)", a, b, own_levels[a]))
    for m in methods:
        if m.startswith("hier_paper_") and "hier_paper" in methods:
            rows.append((f"{m} − hier_paper (own levels)", m, "hier_paper", own_levels[m]))
    for m in AGAINST_MOCOV2:
        if m in methods and "mocov2" in methods:
            rows.append((f"{m} − mocov2", m, "mocov2", common))
    for m in methods:
        rows.append((f"{m} − random init (common levels)", m, RANDOM, common))
    for m in dense:
        rows.append((f"{m} − random init (own levels)", m, RANDOM, own_levels[m]))
    for a, b in (("hier", "moco_zca"), ("voxel2vec", "moco_zca")):
        if a in methods and b in methods:
            rows.append((f"{a} − {b} (common levels)", a, b, common))
    return rows


def _row_legend(methods: list[str], row_options: dict[str, tuple[str, dict]]) -> list[str]:
    """Markdown lines naming what each row trains: its method and config options (`nnssl_pretrain --option`)."""
    if not any(row_options.get(m, ("", {}))[1] for m in methods):
        return []
    lines = ["## Rows", "", "| row | method | options (`nnssl_pretrain --option K=V`) |", "| --- | --- | --- |"]
    for m in methods:
        method, options = row_options.get(m, (m, {}))
        lines.append(f"| {m} | {method} | {', '.join(f'{k}={v}' for k, v in options.items()) or 'defaults'} |")
    return lines + [""]


def _common_view_lines(views: dict[str, dict[int, dict]]) -> list[str]:
    """One table per family: each row's held-out loss / top-1 on each view set of its family (mean over seeds), the
    same crops, correspondences and negatives for every row of the family; chance under the table."""
    lines = ["", "## Held-out pretext on common views (loss / top-1, mean over seeds)"]
    families: dict[tuple, list[str]] = {}
    for m, by_seed in views.items():
        names = tuple(next(iter(by_seed.values())))
        families.setdefault(names, []).append(m)
    for names, rows in families.items():
        first = next(iter(views[rows[0]].values()))
        lines += ["", "| run | seeds | " + " | ".join(f"{n} views" for n in names) + " |",
                  "| --- | --- |" + " --- |" * len(names)]
        for m in rows:
            cells = []
            for n in names:
                records = [record[n] for record in views[m].values() if n in record]
                cells.append(f"{sum(r['loss'] for r in records) / len(records):.3f} / "
                             f"{sum(r['top1'] for r in records) / len(records):.3f}" if records else "–")
            lines.append(f"| {m} | {len(views[m])} | " + " | ".join(cells) + " |")
        crops = sorted({record[n]["crops"] for m in rows for record in views[m].values() for n in record})
        lines += ["", f"By chance: loss ln(negatives + 1) = {first[names[0]]['chance_loss']:.2f}, top-1 "
                      f"{first[names[0]]['chance_top1']:.4f} ({first[names[0]]['negatives']:.0f} negatives per "
                      f"query on average; held-out crops per view set: {', '.join(str(c) for c in crops)})."]
    return lines


def write_report(out: Path, args, own_levels: dict[str, str], common: str) -> dict:
    """benchmark.md, .json and .png in `out` (the results folder) from the step results found there."""
    methods = [m for m in args.methods]
    seeds = list(args.seeds)
    inits = [*methods, RANDOM]
    level_sets = sorted({common, *own_levels.values()})
    scores: dict[tuple[str, str], dict[int, float]] = {}
    folds: dict[tuple[str, str], dict[int, list[float]]] = {}
    organs: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for init in inits:
        for levels in level_sets:
            for seed in seeds:
                record = _load(out / "probe" / f"{init}_{levels}_seed{seed}.json")
                if record is None or record.get("mean_dice_over_folds") is None:
                    continue
                scores.setdefault((init, levels), {})[seed] = record["mean_dice_over_folds"]
                folds.setdefault((init, levels), {})[seed] = [f["mean_dice"] for f in record["folds"]]
                per_organ = {}
                for name in record["folds"][0]["dice"]:
                    values = [f["dice"][name] for f in record["folds"] if f["dice"][name] is not None]
                    per_organ[name] = sum(values) / len(values) if values else math.nan
                organs.setdefault((init, levels), {})[seed] = per_organ

    results = []
    for label, a, b, levels in comparisons(methods, own_levels, common):
        sa, sb = scores.get((a, levels), {}), scores.get((b, levels), {})
        common_seeds = [s for s in seeds if s in sa and s in sb]
        if not common_seeds:
            continue
        p = paired([sa[s] for s in common_seeds], [sb[s] for s in common_seeds])
        needed = seeds_needed(p.sd, DELTA) if p.n > 1 and p.sd > 0 else None
        results.append({"comparison": label, "a": a, "b": b, "levels": levels, "seeds": common_seeds, "n": p.n,
                        "mean": p.mean, "sd": p.sd, "low": p.low, "high": p.high,
                        "per_seed": [sa[s] - sb[s] for s in common_seeds],
                        "detectable": detectable_difference(p.sd, p.n) if p.n > 1 else math.inf,
                        "seeds_for_delta": needed})

    views = {}
    for m in methods:
        for seed in seeds:
            record = _load(out / "common_views" / f"{m}_seed{seed}.json")
            if record is not None:
                views.setdefault(m, {})[seed] = record["views"]
    steps = _load(out / "steps.json") or {}
    spectra, rank_results = _spectra(out, methods, seeds)

    lines = [f"# Benchmark: {len(methods)} rows and random init on Dataset991 ({args.num_labelled} labelled "
             f"phantoms, nnU-Net's 5 folds), pretrained on {args.num_unlabelled} unlabelled phantoms", "",
             f"Pretraining: {args.epochs} epochs × {args.iters} iterations (3d_cpu, batch 2), seeds {seeds}. Probe: "
             f"`nnssl_probe -f all` (2,000 voxels per class per fold), mean Dice over 13 organs on each fold's "
             f"validation cases, averaged over the 5 folds = one score per seed (folds share the pretrained network, "
             f"so the seed is the unit). δ = {DELTA} fixed before the runs.", "",
             *_row_legend(methods, getattr(args, "row_options", {})),
             "## Seed scores", "", "| init | levels | seeds | probe mean Dice (mean ± sd over seeds) | per seed | "
             "fold sd (mean over seeds) |", "| --- | --- | --- | --- | --- | --- |"]
    for init in inits:
        for levels in level_sets:
            by_seed = scores.get((init, levels))
            if not by_seed:
                continue
            values = [by_seed[s] for s in seeds if s in by_seed]
            m, sd = mean_sd(values)
            fold_sds = [mean_sd(folds[(init, levels)][s])[1] for s in by_seed]
            spread = f"{m:.3f} ± {sd:.3f}" if len(values) > 1 else f"{m:.3f} (one seed: no sd)"
            lines.append(f"| {init} | {levels} | {len(values)} | {spread} | "
                         f"{', '.join(f'{v:.3f}' for v in values)} | {sum(fold_sds) / len(fold_sds):.3f} |")
    lines += ["", "## Paired comparisons (A − B, same seed, folds and voxels)", "",
              "| comparison | levels | seeds | mean difference [95 % interval] | sd of d | detectable at this n "
              f"(80 %) | seeds for δ = {DELTA} | decided |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if r["n"] < 2:
            decided = "–"
        elif r["low"] > 0:
            decided = "A above B"
        elif r["high"] < 0:
            decided = "A below B"
        elif r["detectable"] <= DELTA and -DELTA < r["low"] and r["high"] < DELTA:
            decided = f"within ±{DELTA}"
        else:
            decided = "not decided"
        interval = (f"{r['mean']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]" if r["n"] > 1 else
                    f"{r['mean']:+.4f}")
        lines.append(f"| {r['comparison']} | {r['levels']} | {r['n']} | {interval} | "
                     f"{r['sd']:.4f} | {r['detectable']:.4f} | {r['seeds_for_delta'] or '–'} | {decided} |")
    if views:
        lines += _common_view_lines(views)
    if spectra:
        lines += _spectrum_lines(spectra, rank_results, seeds)
    if steps:
        lines += ["", "## CPU time per step (this machine, 2 cores; seconds, mean over the steps run)", ""]
        kinds = {}
        for name, seconds in steps.items():
            kinds.setdefault(name.split(":")[0], []).append(seconds)
        for kind, values in sorted(kinds.items()):
            lines.append(f"- {kind}: {sum(values) / len(values):.0f} s × {len(values)}")
    (out / "benchmark.md").write_text("\n".join(lines) + "\n")
    summary = {"seeds": seeds, "methods": methods, "delta": DELTA,
               "scores": {f"{i}|{l}": v for (i, l), v in scores.items()},
               "organs": {f"{i}|{l}": v for (i, l), v in organs.items()}, "comparisons": results,
               "common_views": views, "steps": steps,
               "effective_rank": {f"{m}|{kind}": {s: v["erank"] for s, v in by_seed.items()}
                                  for (m, kind), by_seed in spectra.items()}, "rank_comparisons": rank_results}
    (out / "benchmark.json").write_text(json.dumps(summary, indent=1, default=str))
    if results:
        plot(out / "benchmark.png", results, args)
    if spectra:
        plot_spectra(out / "spectra.png", spectra, args)
    return summary


def _spectra(out: Path, methods: list[str], seeds: list[int]) -> tuple[dict, list[dict]]:
    """The spectrum step's records (`nnssl_spectrum` on held-out patches, MoCo-family rows) by (row, "raw" |
    "whitened") and by (random, "raw") per seed: {"erank", "values"}; and the paired effective-rank comparisons:
    moco_zca − moco, every component − mocov2, every row − random init of the same seed (raw)."""
    spectra: dict[tuple[str, str], dict[int, dict]] = {}
    for m in methods:
        for seed in seeds:
            record = _load(out / "spectrum" / f"{m}_seed{seed}.json")
            for r in (record or {}).get("results", []):
                kind = "random" if r["name"] == "random init" else r["name"].rsplit(", ", 1)[-1].rstrip(")")
                key = (RANDOM, "raw") if kind == "random" else (m, kind)
                spectra.setdefault(key, {})[seed] = {"erank": r["effective_rank"], "values": r["singular_values"]}
    pairs = [("moco_zca", "moco")] + [(m, "mocov2") for m in AGAINST_MOCOV2]
    pairs += [(m, RANDOM) for m in methods]
    results = []
    for a, b in pairs:
        sa, sb = spectra.get((a, "raw"), {}), spectra.get((b, "raw"), {})
        both = [s for s in seeds if s in sa and s in sb]
        if a == b or not both:
            continue
        p = paired([sa[s]["erank"] for s in both], [sb[s]["erank"] for s in both])
        results.append({"comparison": f"{a} − {b if b != RANDOM else 'random init'} (raw)", "n": p.n,
                        "mean": p.mean, "low": p.low, "high": p.high})
    return spectra, results


def _spectrum_lines(spectra: dict, rank_results: list[dict], seeds: list[int]) -> list[str]:
    """Markdown: effective ranks per row (raw, whitened) and their paired comparisons."""
    lines = ["", "## Effective rank of the pooled bottleneck on held-out patches (MoCo family; Hassanpour et al.'s "
             "Fig. 1: spectra.png)", "", "| representation | seeds | effective rank (mean ± sd over seeds) | per seed |",
             "| --- | --- | --- | --- |"]
    for (m, kind), by_seed in sorted(spectra.items(), key=lambda kv: (kv[0][0] == RANDOM, kv[0])):
        values = [by_seed[s]["erank"] for s in seeds if s in by_seed]
        m_, sd = mean_sd(values)
        spread = f"{m_:.1f} ± {sd:.1f}" if len(values) > 1 else f"{m_:.1f} (one seed)"
        name = "random init" if m == RANDOM else f"{m}, {kind}"
        lines.append(f"| {name} | {len(values)} | {spread} | {', '.join(f'{v:.1f}' for v in values)} |")
    if rank_results:
        lines += ["", "| comparison (paired by seed) | seeds | mean difference [95 % interval] |", "| --- | --- | --- |"]
        for r in rank_results:
            cell = (f"{r['mean']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]" if r["n"] > 1 else
                    f"{r['mean']:+.1f} (one seed)")
            lines.append(f"| {r['comparison']} | {r['n']} | {cell} |")
    return lines


def plot_spectra(path: Path, spectra: dict, args) -> None:
    """Hassanpour et al.'s Fig. 1 on the benchmark: each representation's singular values divided by its largest,
    averaged over seeds, on a log axis (a steep early drop = a collapsed representation); raw solid, whitened
    dashed, random init grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    rows = sorted({m for m, _ in spectra if m != RANDOM})
    colours = {m: f"C{i % 10}" for i, m in enumerate(rows)}
    for (m, kind), by_seed in sorted(spectra.items()):
        curves = [[v / by_seed[s]["values"][0] for v in by_seed[s]["values"]] for s in sorted(by_seed)]
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(min(map(len, curves)))]
        erank = sum(r["erank"] for r in by_seed.values()) / len(by_seed)
        label = (f"random init (erank {erank:.0f})" if m == RANDOM else f"{m}, {kind} (erank {erank:.0f})")
        ax.plot(range(1, len(mean) + 1), mean, color="0.55" if m == RANDOM else colours[m],
                ls="--" if kind == "whitened" else "-", lw=1.6, label=f"{label}, {len(curves)} seed(s)")
    ax.set_yscale("log")
    ax.set_xlabel("singular value index (pooled bottleneck channels)", fontsize=9)
    ax.set_ylabel("singular value / largest (mean over seeds)", fontsize=9)
    ax.set_title(f"Spectra of the pooled bottleneck on held-out patches of Dataset991\n3d_cpu, "
                 f"{args.epochs * args.iters:,} pretraining steps (a steep early drop = collapse)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot(path: Path, results: list[dict], args) -> None:
    """Forest plot: each comparison's per-seed paired differences (dots) and its mean with the 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(results) + 2.0))
    for y, r in enumerate(reversed(results)):
        ax.scatter(r["per_seed"], [y] * len(r["per_seed"]), s=14, color="0.6", zorder=2)
        if r["n"] > 1:
            ax.plot([r["low"], r["high"]], [y, y], color="C0", lw=2.5, zorder=3)
        ax.scatter([r["mean"]], [y], color="C0", marker="D", s=30, zorder=4)
    ax.set_yticks(range(len(results)), [f"{r['comparison']} (n={r['n']})" for r in reversed(results)], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    for x in (-DELTA, DELTA):
        ax.axvline(x, color="k", lw=0.6, ls=":")
    ax.set_xlabel(f"paired difference A − B in probe mean Dice\n(grey dots: seeds; blue bar: 95 % interval; "
                  f"dotted: ±δ = {DELTA})", fontsize=9)
    ax.set_title(f"Benchmark: probe on 5 folds of {args.num_labelled} labelled phantoms\n3d_cpu, "
                 f"{args.epochs * args.iters:,} pretraining steps, paired by seed", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Seconds per step on this 2-core machine, used for the plan until the benchmark has measured its own (steps.json):
# a 1,000-step 3d_cpu pretraining and an all-fold probe of 30 cases, as measured alone on 2026-12-07 (hier_paper and
# voxel2vec_paper 729-837 s; probes 61-125 s per level set; common views 26-34 s); MoCo from the earlier probe
# study's timings (MoCo steps ~2.5x cheaper than dense ones).
ESTIMATES = {"pretrain dense": 830.0, "pretrain moco": 400.0, "probe": 100.0, "common views": 30.0}


def step_seconds(steps: dict, kind: str, dense: bool = False) -> tuple[float, bool]:
    """(seconds per step of `kind`, measured?) from steps.json's entries 'kind ...:init:seed'."""
    key = {"pretrain": "pretrain"}.get(kind, kind)
    values = [v for name, v in steps.items() if name.startswith(key) and
              (kind != "pretrain" or (name.split(":")[0].split(" ", 1)[1].startswith(("hier", "voxel2vec"))) == dense)]
    if values:
        return sum(values) / len(values), True
    return ESTIMATES[f"pretrain {'dense' if dense else 'moco'}" if kind == "pretrain" else kind], False


def seed_seconds(steps: dict, methods: list[str], own_levels: dict[str, str], common: str) -> tuple[float, list[str]]:
    """The CPU time of one seed of the benchmark, and how each part was obtained."""
    lines, total = [], 0.0
    probes = len({common, *own_levels.values()}) + sum(len({common, own_levels[m]}) for m in methods)
    for kind, count, dense in [("pretrain", sum(own_levels[m] != common for m in methods), True),
                               ("pretrain", sum(own_levels[m] == common for m in methods), False),
                               ("probe", probes, False), ("common views", len(methods), False)]:
        if not count:
            continue
        seconds, measured = step_seconds(steps, kind, dense)
        total += count * seconds
        label = f"{kind}{' (dense)' if kind == 'pretrain' and dense else ' (MoCo family)' if kind == 'pretrain' else ''}"
        lines.append(f"{count} × {label}: {seconds:.0f} s each ({'measured' if measured else 'estimated'})")
    return total, lines


def plan_text(summary: dict, methods: list[str], own_levels: dict[str, str], common: str, done_seeds: int,
              cap_hours: float) -> str:
    """The CPU plan: time per seed, and the seeds the pilot's paired sds ask for δ = DELTA, within the cap."""
    per_seed, parts = seed_seconds(summary.get("steps", {}), methods, own_levels, common)
    lines = [f"CPU plan: one seed = {per_seed / 3600:.1f} h on this 2-core machine ({'; '.join(parts)})."]
    decisive = [r for r in summary.get("comparisons", []) if r["n"] > 1]
    if not decisive:
        lines.append(f"No paired sd yet: the pilot (seeds 0-2) comes first ({3 * per_seed / 3600:.1f} h).")
        return "\n".join(lines)
    affordable = done_seeds + int(max(0.0, cap_hours * 3600 - 0) // per_seed)
    for r in decisive:
        need = r["seeds_for_delta"]
        lines.append(f"- {r['comparison']}: sd of the paired difference {r['sd']:.4f} over {r['n']} seeds → "
                     f"{need if need else '> 1000'} seeds for δ = {DELTA}")
    needs = [r["seeds_for_delta"] or 10 ** 6 for r in decisive]
    target = max(needs)
    chosen = min(target, affordable)
    reached = [detectable_difference(r["sd"], chosen) for r in decisive]
    lines.append(f"Seeds for every comparison: {target if target < 10 ** 6 else '> 1000'}; a cap of {cap_hours:g} CPU "
                 f"hours beyond the {done_seeds} seeds done allows {affordable} in all → run {chosen} seeds"
                 + ("" if chosen >= target else f" (the cap binds: δ reached {max(reached):.4f})") + ".")
    return "\n".join(lines)
