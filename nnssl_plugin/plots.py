"""Plots of a pretraining run: progress.png (per epoch) and spectrum.png (at the end)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_progress(log: dict, path: str | os.PathLike) -> None:
    """Losses, pretext top-1 and effective rank, epoch time and learning rate, one row each."""
    epochs = min(len(log["train_losses"]), len(log["epoch_end_timestamps"]))
    if epochs == 0:
        return
    x = np.arange(epochs)
    fig, axes = plt.subplots(3, 1, figsize=(20, 16))
    ax = axes[0]
    for key, style in (("train_losses", "b-"), ("val_losses", "r-"), ("loss_global", "b:"), ("loss_local", "g:"),
                       ("loss_voxel", "b:"), ("loss_restore", "g:")):
        values = log.get(key, [])[:epochs]
        if len(values) == epochs and not all(v is None for v in values):
            ax.plot(x, values, style, label=key, linewidth=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("SSL loss")
    ax.legend(loc="upper right")
    ax = axes[1]
    for key, style in (("top1_train", "b-"), ("top1_val", "r-")):
        ax.plot(x, log[key][:epochs], style, label=key, linewidth=3)
    ax.set_ylabel("pretext top-1")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left")
    twin = ax.twinx()
    ranks = log["erank"][:epochs]
    for name in dict.fromkeys(name for epoch in ranks for name in epoch):
        twin.plot(x, [epoch.get(name, np.nan) for epoch in ranks], label=f"effective rank ({name})", linewidth=2)
    twin.set_ylabel("effective rank (RankMe)")
    twin.legend(loc="upper right")
    ax = axes[2]
    durations = np.array(log["epoch_end_timestamps"][:epochs]) - np.array(log["epoch_start_timestamps"][:epochs])
    ax.plot(x, durations, "b-", label="epoch duration (s)", linewidth=3)
    ax.set_xlabel("epoch")
    ax.legend(loc="upper left")
    twin = ax.twinx()
    twin.plot(x, log["lrs"][:epochs], "g-", label="learning rate", linewidth=3)
    twin.legend(loc="upper right")
    fig.tight_layout()
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
