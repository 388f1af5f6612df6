"""Plots of a pretraining run: progress.png (per epoch; held-out values too with --eval-target) and spectrum.png (at
the end)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def progress_figure(log: dict):
    """The progress figure: losses; pretext top-1 and effective rank; held-out values and the online probe's mean
    Dice with its random-init reference (only when the log has some); epoch time and learning rate. Within a panel no
    two curves share a colour. None before the first epoch ends."""
    epochs = min(len(log["train_losses"]), len(log["epoch_end_timestamps"]))
    if epochs == 0:
        return None
    heldout = any(v is not None for key in ("heldout_loss", "heldout_top1", "probe_dice")
                  for v in log.get(key, [])[:epochs])
    x = np.arange(epochs)
    fig, axes = plt.subplots(4 if heldout else 3, 1, figsize=(20, 21 if heldout else 16))
    ax = axes[0]
    curves = []
    terms = [key for key in log if key.startswith("loss_")]  # the family's weighted terms (Family.loss_terms)
    for key, style in (("train_losses", "-"), ("val_losses", "-"), *((key, ":") for key in terms)):
        at, values = defined(log.get(key, []), epochs)
        if values:
            curves.append(_Curve(at, values, style, LABELS.get(key, key)))
    _draw_panel(ax, None, curves)
    ax.set_xlabel("epoch")
    ax.set_ylabel("SSL loss")
    ax.legend(loc="upper right")
    ax, twin = axes[1], axes[1].twinx()
    curves = [_Curve(*defined(log.get(key, []), epochs), "-", LABELS[key]) for key in ("top1_train", "top1_val")]
    ranks = log["erank"][:epochs]
    curves += [_Curve(x, [(epoch or {}).get(name, np.nan) for epoch in ranks], "-", f"effective rank ({name})",
                      width=2, on_twin=True) for name in _rank_names(ranks)]
    held_ranks = log.get("heldout_erank", [])[:epochs]
    curves += [_Curve(*defined([None if e is None else e.get(name) for e in held_ranks], epochs), "o--",
                      f"held-out effective rank ({name})", width=2, on_twin=True) for name in _rank_names(held_ranks)]
    _draw_panel(ax, twin, curves)
    ax.set_ylabel("pretext top-1")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left")
    twin.set_ylabel("effective rank (RankMe)")
    twin.legend(loc="upper right")
    if heldout:
        ax, twin = axes[2], axes[2].twinx()
        _draw_panel(ax, twin, [c for c in _heldout_curves(log, epochs) if len(c.y)])
        ax.set_xlabel("epoch")
        ax.set_ylabel("held-out pretext top-1 / online probe mean Dice\n(labelled target, never trained on)")
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.5, epochs - 0.5)
        ax.legend(loc="upper left")
        twin.set_ylabel("held-out SSL loss")
        if twin.get_lines():
            twin.legend(loc="upper right")
    ax, twin = axes[-1], axes[-1].twinx()
    durations = np.array(log["epoch_end_timestamps"][:epochs]) - np.array(log["epoch_start_timestamps"][:epochs])
    _draw_panel(ax, twin, [_Curve(x, durations, "-", "epoch duration (s)"),
                           _Curve(x, log["lrs"][:epochs], "-", "learning rate", on_twin=True)])
    ax.set_xlabel("epoch")
    ax.legend(loc="upper left")
    twin.legend(loc="upper right")
    fig.tight_layout()
    return fig


def _heldout_curves(log: dict, epochs: int) -> list[_Curve]:
    """The held-out panel: held-out top-1, its chance level and loss (twin axis); the online probe's mean Dice at the
    probed epochs and its random-init reference as a dashed line across the panel (the latest value logged)."""
    curves = [_Curve(*defined(log.get("heldout_top1", []), epochs), "o-", "held-out top-1"),
              _Curve(*defined(log.get("heldout_chance", []), epochs), ":", "held-out top-1 by chance", width=2,
                     colour="black"),
              _Curve(*defined(log.get("heldout_loss", []), epochs), "s-", "held-out loss", on_twin=True),
              _Curve(*defined(log.get("probe_dice", []), epochs), "D-", "online probe mean Dice")]
    _, references = defined(log.get("probe_random_dice", []), epochs)
    if references:
        curves.append(_Curve([-0.5, epochs - 0.5], [references[-1]] * 2, "--", "online probe mean Dice, random init",
                             width=2))
    return curves


def plot_progress(log: dict, path: str | os.PathLike) -> None:
    """progress.png: `progress_figure` written to `path` (nothing before the first epoch ends)."""
    fig = progress_figure(log)
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


def plot_spectrum(spectra: dict[str, np.ndarray], ranks: dict[str, float], path: str | os.PathLike,
                  title: str = "") -> None:
    """Sorted singular values of the embedding covariance (log scale), one curve per representation, one colour
    per method and representation."""
    fig, ax = plt.subplots(figsize=(14 if len(spectra) > 6 else 9, 6.5))
    colours = plt.get_cmap("tab10" if len({curve_group(n) for n in spectra}) <= 10 else "tab20").colors
    for name, (colour, style) in curve_styles(list(spectra)).items():
        values = np.clip(np.asarray(spectra[name], dtype=np.float64), 1e-12, None)
        ax.plot(np.arange(1, len(values) + 1), np.log10(values), style, color=colours[colour % len(colours)],
                label=f"{name} (effective rank {ranks[name]:.1f})", linewidth=2)
    ax.set_xlabel("singular value rank")
    ax.set_ylabel("log10 singular value of the embedding covariance")
    ax.set_title(title)
    if len(spectra) > 6:  # beside the axes: a long legend would hide the curves
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
