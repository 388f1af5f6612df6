"""Plots of a pretraining run: progress.png (per epoch; held-out values too with --eval-target) and spectrum.png (at
the end)."""
from __future__ import annotations

import os

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


def progress_figure(log: dict):
    """The progress figure: losses; pretext top-1 and effective rank; held-out values (only when the log has some);
    epoch time and learning rate. None before the first epoch ends."""
    epochs = min(len(log["train_losses"]), len(log["epoch_end_timestamps"]))
    if epochs == 0:
        return None
    heldout = any(v is not None for key in ("heldout_loss", "heldout_top1") for v in log.get(key, [])[:epochs])
    x = np.arange(epochs)
    fig, axes = plt.subplots(4 if heldout else 3, 1, figsize=(20, 21 if heldout else 16))
    ax = axes[0]
    for key, style in (("train_losses", "b-"), ("val_losses", "r-"), ("loss_global", "b:"), ("loss_local", "g:"),
                       ("loss_voxel", "b:"), ("loss_restore", "g:")):
        at, values = defined(log.get(key, []), epochs)
        if values:
            ax.plot(at, values, style, label=LABELS.get(key, key), linewidth=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("SSL loss")
    ax.legend(loc="upper right")
    ax = axes[1]
    for key, style in (("top1_train", "b-"), ("top1_val", "r-")):
        ax.plot(*defined(log.get(key, []), epochs), style, label=LABELS[key], linewidth=3)
    ax.set_ylabel("pretext top-1")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left")
    twin = ax.twinx()
    ranks = log["erank"][:epochs]
    for name in _rank_names(ranks):
        twin.plot(x, [(epoch or {}).get(name, np.nan) for epoch in ranks], label=f"effective rank ({name})",
                  linewidth=2)
    held_ranks = log.get("heldout_erank", [])[:epochs]
    for name in _rank_names(held_ranks):
        at, values = defined([None if e is None else e.get(name) for e in held_ranks], epochs)
        twin.plot(at, values, "o--", label=f"held-out effective rank ({name})", linewidth=2)
    twin.set_ylabel("effective rank (RankMe)")
    twin.legend(loc="upper right")
    if heldout:
        ax = axes[2]
        ax.plot(*defined(log.get("heldout_top1", []), epochs), "mo-", label="held-out top-1", linewidth=3)
        ax.plot(*defined(log.get("heldout_chance", []), epochs), "k:", label="held-out top-1 by chance", linewidth=2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("held-out pretext top-1 (labelled target, never trained on)")
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.5, epochs - 0.5)
        ax.legend(loc="upper left")
        twin = ax.twinx()
        twin.plot(*defined(log.get("heldout_loss", []), epochs), "cs-", label="held-out loss", linewidth=3)
        twin.set_ylabel("held-out SSL loss")
        twin.legend(loc="upper right")
    ax = axes[-1]
    durations = np.array(log["epoch_end_timestamps"][:epochs]) - np.array(log["epoch_start_timestamps"][:epochs])
    ax.plot(x, durations, "b-", label="epoch duration (s)", linewidth=3)
    ax.set_xlabel("epoch")
    ax.legend(loc="upper left")
    twin = ax.twinx()
    twin.plot(x, log["lrs"][:epochs], "g-", label="learning rate", linewidth=3)
    twin.legend(loc="upper right")
    fig.tight_layout()
    return fig


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
