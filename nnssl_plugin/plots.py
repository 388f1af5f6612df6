"""Plots: a pretraining run's progress.png (per epoch; held-out values too with --eval-target) and the spectrum
figure of nnssl_spectrum."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


LABELS = {"train_losses": "train", "val_losses": "val (training cases)", "top1_train": "top-1 train",
          "top1_val": "top-1 val (training cases)"}  # pretraining's own "val" runs on the training cases (fold all)


def defined(values: list, epochs: int) -> tuple[np.ndarray, list]:
    """(epochs, values) of the entries among the first `epochs` that are not None (logged every K epochs)."""
    pairs = [(i, v) for i, v in enumerate(values[:epochs]) if v is not None]
    return np.array([i for i, _ in pairs], dtype=int), [v for _, v in pairs]


def _rank_names(ranks: list) -> list[str]:
    return list(dict.fromkeys(name for epoch in ranks for name in (epoch or {})))


def distinct_colours(n: int) -> list[tuple]:
    """`n` colours, no two alike: tab10 up to 10; tab20 (its ten darker, then its ten lighter shades) up to 20;
    evenly spaced samples of a continuous map beyond."""
    if n <= 10:
        return [tuple(c) for c in plt.get_cmap("tab10").colors[:n]]
    if n <= 20:
        tab20 = plt.get_cmap("tab20").colors
        return [tuple(c) for c in (tab20[0::2] + tab20[1::2])[:n]]
    return [tuple(c) for c in plt.get_cmap("turbo")(np.linspace(0.0, 1.0, n))]


@dataclass
class _Curve:
    x: object
    y: object
    style: str  # line style and marker only: the colour is the panel's to give
    label: str
    width: float = 3
    on_twin: bool = False
    colour: object = None  # a fixed colour outside the palette (black for "by chance"), else one from it


def _draw_panel(ax, twin, curves: list[_Curve]) -> None:
    """Every curve of one panel, its axis and twin axis together, in a colour no other curve of the panel has:
    the two axes keep separate legends, so a colour used on both would make two curves indistinguishable."""
    palette = iter(distinct_colours(sum(c.colour is None for c in curves)))
    for curve in curves:
        colour = curve.colour if curve.colour is not None else next(palette)
        (twin if curve.on_twin else ax).plot(curve.x, curve.y, curve.style, color=colour, label=curve.label,
                                             linewidth=curve.width)


def progress_figure(log: dict, title: str = "", rank_limits: dict[str, int] | None = None,
                    term_starts: dict[str, float] | None = None):
    """The progress figure, one quantity per panel (no twin axes), integer epochs, legends beside the axes:
    training loss (the family's weighted terms dotted, a term that starts late marked: the total steps up there);
    with the held-out hook, the held-out pretext loss against its chance level ln(negatives + 1); pretext top-1
    (held-out with its chance line); with the online probe, its mean Dice against the random-init reference
    (dashed); the effective rank from 0, with the largest possible rank of each representation (`rank_limits`:
    name -> min(samples, dimensions)) marked; epoch time and learning rate. `title` names method, dataset and
    configuration; `term_starts` (term -> x position, e.g. 0.3 for step 80 of 100 in epoch 0) where the trainer saw
    a term start, else where the log shows it. Within a panel no two curves share a colour. None before the first
    epoch ends."""
    epochs = min(len(log["train_losses"]), len(log["epoch_end_timestamps"]))
    if epochs == 0:
        return None
    heldout = _logged(log, "heldout_loss", epochs) or _logged(log, "heldout_top1", epochs)
    probe = _logged(log, "probe_dice", epochs)
    rows = ["loss", *(["heldout"] if heldout else []), "top1", *(["probe"] if probe else []), "rank", "time"]
    fig = plt.figure(figsize=(15, 3.4 * len(rows) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(rows), 2)
    axes = {row: fig.add_subplot(grid[i, :]) for i, row in enumerate(rows) if row != "time"}
    axes["time"], axes["lr"] = fig.add_subplot(grid[-1, 0]), fig.add_subplot(grid[-1, 1])
    x = np.arange(epochs)

    _panel(axes["loss"], _loss_curves(log, epochs), "training loss (weighted terms dotted)")
    starts = {term: epoch - 0.5 for epoch, term in _late_terms(log, epochs)}
    starts.update(term_starts or {})
    for term, at in starts.items():
        axes["loss"].axvline(at, color="grey", linestyle="--", linewidth=1.5,
                             label=f"{term[len('loss_'):]} term starts: the total steps up (not a divergence)")
    _legend(axes["loss"])
    if heldout:
        at, chance = defined(log.get("heldout_chance", []), epochs)
        _panel(axes["heldout"], [_Curve(*defined(log.get("heldout_loss", []), epochs), "s-", "held-out loss"),
                                 _Curve(at, [-np.log(c) for c in chance], ":", "chance: ln(negatives + 1)", width=2,
                                        colour="black")],
               "held-out pretext loss\n(labelled target, never trained on)")
        _legend(axes["heldout"])
    curves = [_Curve(*defined(log.get(key, []), epochs), "-", LABELS[key]) for key in ("top1_train", "top1_val")]
    curves += [_Curve(*defined(log.get("heldout_top1", []), epochs), "o-", "held-out top-1"),
               _Curve(*defined(log.get("heldout_chance", []), epochs), ":", "held-out top-1 by chance", width=2,
                      colour="black")]
    _panel(axes["top1"], [c for c in curves if len(c.y)], "pretext top-1")
    axes["top1"].set_ylim(bottom=0)
    _legend(axes["top1"])
    if probe:
        curves = [_Curve(*defined(log.get("probe_dice", []), epochs), "D-", "online probe mean Dice")]
        _, references = defined(log.get("probe_random_dice", []), epochs)
        if references:
            curves.append(_Curve([-0.5, epochs - 0.5], [references[-1]] * 2, "--",
                                 "online probe mean Dice, random init", width=2))
        _panel(axes["probe"], curves, "online probe mean Dice\n(labelled target)")
        axes["probe"].set_ylim(bottom=0)
        _legend(axes["probe"])
    _panel(axes["rank"], _rank_curves(log, epochs, x), "effective rank (RankMe)")
    for i, (limit, names) in enumerate(_limits(rank_limits or {}).items()):
        axes["rank"].axhline(limit, color="black", linestyle=("--", "-.", ":")[i % 3], linewidth=1.5,
                             label=f"largest possible rank {limit} ({names})")
    axes["rank"].set_ylim(bottom=0)
    _legend(axes["rank"])
    durations = np.array(log["epoch_end_timestamps"][:epochs]) - np.array(log["epoch_start_timestamps"][:epochs])
    _panel(axes["time"], [_Curve(x, durations, "-", "epoch duration (s)")], "epoch duration (s)")
    _panel(axes["lr"], [_Curve(x, log["lrs"][:epochs], "-", "learning rate")], "learning rate")
    for ax in axes.values():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.5, max(epochs - 0.5, 0.5))
    for row in ("time", "lr", rows[-2]):
        axes[row].set_xlabel("epoch")
    if title:
        fig.suptitle(title, fontsize="x-large")
    return fig


def _logged(log: dict, key: str, epochs: int) -> bool:
    return any(v is not None for v in log.get(key, [])[:epochs])


def _panel(ax, curves: list[_Curve], ylabel: str) -> None:
    _draw_panel(ax, None, curves)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _legend(ax) -> None:
    """The legend beside the axes, never on top of a curve."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def _loss_curves(log: dict, epochs: int) -> list[_Curve]:
    curves = []
    terms = [key for key in log if key.startswith("loss_")]  # the family's weighted terms (Family.loss_terms)
    for key, style in (("train_losses", "-"), ("val_losses", "-"), *((key, ":") for key in terms)):
        at, values = defined(log.get(key, []), epochs)
        if values:
            label = LABELS.get(key, f"{key[len('loss_'):]} term" if key.startswith("loss_") else key)
            curves.append(_Curve(at, values, style, label))
    return curves


def _late_terms(log: dict, epochs: int) -> list[tuple[int, str]]:
    """(epoch, term) for each loss term that is 0 or absent in the first epoch(s) and non-zero later (MoCo's global
    InfoNCE waits for real keys in its queue): where the total loss steps up."""
    late = []
    for key in (k for k in log if k.startswith("loss_")):
        values = log[key][:epochs]
        first = next((i for i, v in enumerate(values) if v), None)
        if first is not None and first > 0:
            late.append((first, key))
    return late


def _rank_curves(log: dict, epochs: int, x) -> list[_Curve]:
    ranks = log["erank"][:epochs]
    curves = [_Curve(x, [(epoch or {}).get(name, np.nan) for epoch in ranks], "-", f"effective rank ({name})",
                     width=2) for name in _rank_names(ranks)]
    held = log.get("heldout_erank", [])[:epochs]
    curves += [_Curve(*defined([None if e is None else e.get(name) for e in held], epochs), "o--",
                      f"held-out effective rank ({name})", width=2) for name in _rank_names(held)]
    return curves


def _limits(rank_limits: dict[str, int]) -> dict[int, str]:
    """Distinct largest possible ranks, each with the representations it bounds (a long list shortened)."""
    grouped: dict[int, list[str]] = {}
    for name, limit in rank_limits.items():
        grouped.setdefault(int(limit), []).append(name)
    return {limit: ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:2])} and {len(names) - 2} more"
            for limit, names in sorted(grouped.items())}


def plot_progress(log: dict, path: str | os.PathLike, title: str = "", rank_limits: dict[str, int] | None = None,
                  term_starts: dict[str, float] | None = None) -> None:
    """progress.png: `progress_figure` written to `path` (nothing before the first epoch ends)."""
    fig = progress_figure(log, title, rank_limits, term_starts)
    if fig is None:
        return
    fig.savefig(path)
    plt.close(fig)


def curve_group(name: str) -> str:
    """The group of a spectrum curve: the "(method, representation)" part of its name, else the whole name."""
    return name[name.rindex("(") + 1:name.rindex(")")] if name.endswith(")") and "(" in name else name


def curve_styles(names: list[str]) -> dict[str, tuple[int, str]]:
    """(colour index, line style) per curve: one colour per group (method and representation), one line style per
    member of a group (e.g. its seeds), so 16 curves of 6 groups stay readable."""
    groups = list(dict.fromkeys(curve_group(n) for n in names))
    seen: dict[str, int] = {}
    styles = {}
    for name in names:
        group = curve_group(name)
        styles[name] = (groups.index(group), ("-", "--", ":", "-.")[seen.get(group, 0) % 4])
        seen[group] = seen.get(group, 0) + 1
    return styles


def legend_name(name: str, width: int = 56) -> str:
    """A short legend entry for a spectrum curve: `nnsslPretrainer_moco_zca_3epochs_seed0 (moco_zca, raw)` ->
    `moco_zca_3epochs_seed0, raw` (the trainer prefix and a repeated method dropped), cut to `width` characters."""
    match = re.fullmatch(r"(.*) \((.+), (raw|whitened)\)", name)
    if match:
        label, method, representation = match.groups()
        label = label.removeprefix("nnsslPretrainer_")
        name = f"{label if label.startswith(method) else f'{method} {label}'}, {representation}"
    return name if len(name) <= width else f"{name[:width - 12]}…{name[-11:]}"


def spectrum_figure(spectra: dict[str, np.ndarray], ranks: dict[str, float], title: str = "",
                    normalise: bool = False):
    """Sorted singular values of the embedding covariance (log scale), one curve per representation, one colour
    per method and representation, short legend entries with the effective rank. `normalise`: each curve divided by
    its largest value, so curves of different scale (a whitened embedding's is ~1 per direction) compare by shape."""
    fig, ax = plt.subplots(figsize=(12, 6), layout="constrained")
    colours = plt.get_cmap("tab10" if len({curve_group(n) for n in spectra}) <= 10 else "tab20").colors
    for name, (colour, style) in curve_styles(list(spectra)).items():
        values = np.clip(np.asarray(spectra[name], dtype=np.float64), 1e-12, None)
        if normalise:
            values = np.clip(values / values[0], 1e-12, None)
        ax.plot(np.arange(1, len(values) + 1), np.log10(values), style, color=colours[colour % len(colours)],
                label=f"{legend_name(name)} (rank {ranks[name]:.1f})", linewidth=2)
    ax.set_xlabel("singular value rank")
    ax.set_ylabel("log10 singular value / largest" if normalise else
                  "log10 singular value of the embedding covariance")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, off the curves
    return fig


def plot_spectrum(spectra: dict[str, np.ndarray], ranks: dict[str, float], path: str | os.PathLike,
                  title: str = "", normalise: bool = False) -> None:
    """`spectrum_figure` written to `path`."""
    fig = spectrum_figure(spectra, ranks, title, normalise)
    fig.savefig(path)
    plt.close(fig)
