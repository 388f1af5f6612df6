"""Plots: spectrum styling (one colour per method and representation, one line style per seed) and progress.png
(held-out values and the online probe at the evaluated epochs only, pretraining's own val labelled as training
cases)."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from nnssl_plugin.plots import (curve_group, curve_styles, defined, distinct_colours, legend_name, plot_progress,
                                plot_spectrum, progress_figure, spectrum_figure)

NAMES = ["random init", "run_moco_seed0 (moco, raw)", "run_moco_seed1 (moco, raw)",
         "run_zca_seed0 (moco_zca, raw)", "run_zca_seed0 (moco_zca, whitened)", "run_zca_seed1 (moco_zca, raw)"]


def test_group_is_the_parenthesised_method_and_representation():
    assert [curve_group(n) for n in NAMES] == ["random init", "moco, raw", "moco, raw", "moco_zca, raw",
                                               "moco_zca, whitened", "moco_zca, raw"]


def test_curves_of_a_group_share_a_colour_and_differ_in_line_style():
    styles = curve_styles(NAMES)
    assert styles == {"random init": (0, "-"), "run_moco_seed0 (moco, raw)": (1, "-"),
                      "run_moco_seed1 (moco, raw)": (1, "--"), "run_zca_seed0 (moco_zca, raw)": (2, "-"),
                      "run_zca_seed0 (moco_zca, whitened)": (3, "-"), "run_zca_seed1 (moco_zca, raw)": (2, "--")}


def test_plot_is_written(tmp_path):
    spectra = {n: np.linspace(1, 0.01, 8) for n in NAMES}
    plot_spectrum(spectra, {n: 3.0 for n in NAMES}, tmp_path / "s.png", title="t")
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_spectrum_legends_are_short_and_normalised_curves_start_at_one():
    long = "nnsslPretrainer_moco_zca_40epochs_25iters_seed0_r34f30443 (moco_zca, whitened)"
    assert legend_name(long) == "moco_zca_40epochs_25iters_seed0_r34f30443, whitened"
    assert legend_name("model_final (nnssl, raw)") == "nnssl model_final, raw" and legend_name("random init") == \
        "random init"
    assert len(legend_name("x" * 80 + " (moco, raw)")) == 56
    spectra = {"random init": np.array([50.0, 5.0, 0.5]), long: np.array([1.1, 1.0, 0.9])}  # whitened: ~1 each
    fig = spectrum_figure(spectra, {n: 2.0 for n in spectra}, normalise=True)
    lines = _lines(fig)
    assert {label.split(" (rank")[0] for label in lines} == {"random init", legend_name(long)}
    assert all(y[0] == 0.0 for _, y in lines.values()), "each curve divided by its largest value"


def _log(epochs: int, heldout_every: int | None, probe_every: int | None = None) -> dict:
    """A pretraining log of `epochs` epochs; held-out values every `heldout_every` epochs (None: no hook); the online
    probe's mean Dice every `probe_every` epochs (None: no probe) with the random-init reference 0.125."""
    log = {"train_losses": [2.0 - 0.1 * e for e in range(epochs)], "val_losses": [2.1 - 0.1 * e for e in range(epochs)],
           "loss_global": [1.0] * epochs, "loss_local": [None] * epochs, "loss_voxel": [None] * epochs,
           "loss_restore": [None] * epochs, "top1_train": [0.5] * epochs, "top1_val": [0.4] * epochs,
           "erank": [{"raw bottleneck": 3.0}] * epochs, "lrs": [0.01] * epochs,
           "epoch_start_timestamps": [10.0 * e for e in range(epochs)],
           "epoch_end_timestamps": [10.0 * e + 9 for e in range(epochs)]}
    if heldout_every is not None:
        due = [(e + 1) % heldout_every == 0 for e in range(epochs)]
        log["heldout_loss"] = [3.0 if d else None for d in due]
        log["heldout_top1"] = [0.25 if d else None for d in due]
        log["heldout_chance"] = [1 / 64 if d else None for d in due]
        log["heldout_erank"] = [{"raw bottleneck": 5.0, "whitened bottleneck": 6.0} if d else None for d in due]
    if probe_every is not None:
        due = [(e + 1) % probe_every == 0 for e in range(epochs)]
        log["probe_dice"] = [0.25 + e / 16 if d else None for e, d in enumerate(due)]  # exact in binary
        log["probe_random_dice"] = [0.125 if d else None for d in due]
    return log


def _lines(fig) -> dict[str, tuple[list, list]]:
    """Every labelled curve of a figure: label -> (x, y)."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_defined_drops_the_epochs_without_a_value():
    at, values = defined([None, 1.0, None, 2.0, 3.0], 4)
    assert list(at) == [1, 3] and values == [1.0, 2.0]


def test_progress_shows_heldout_values_only_at_the_evaluated_epochs():
    fig = progress_figure(_log(7, heldout_every=3))
    lines = _lines(fig)
    assert len(fig.axes) == 6  # loss, held-out loss, top-1, rank, and epoch time beside learning rate: no twin axes
    assert lines["held-out top-1"] == ([2, 5], [0.25, 0.25])
    assert lines["held-out top-1 by chance"] == ([2, 5], [1 / 64, 1 / 64])
    assert lines["held-out loss"] == ([2, 5], [3.0, 3.0])
    assert lines["chance: ln(negatives + 1)"][1] == pytest.approx([np.log(64)] * 2)  # InfoNCE at chance
    assert lines["held-out effective rank (whitened bottleneck)"] == ([2, 5], [6.0, 6.0])


def test_progress_labels_pretrainings_own_val_as_training_cases():
    lines = _lines(progress_figure(_log(3, heldout_every=None)))
    assert "val (training cases)" in lines and "top-1 val (training cases)" in lines
    assert not any(label.startswith("held-out") for label in lines)


def test_progress_without_heldout_keys_or_with_none_only_has_no_heldout_panel(tmp_path):
    for log in (_log(4, heldout_every=None), _log(4, heldout_every=9)):  # an older log; a hook not yet due
        fig = progress_figure(log)
        assert len(fig.axes) == 5  # loss, top-1, rank, epoch time, learning rate
    plot_progress(_log(4, heldout_every=2), tmp_path / "progress.png")
    assert (tmp_path / "progress.png").stat().st_size > 1000


def test_progress_is_fit_for_a_slide_title_integer_epochs_legends_beside_the_axes():
    fig = progress_figure(_log(3, heldout_every=1), title="moco_zca pretraining on Dataset990_X, 3d_cpu")
    fig.canvas.draw()
    assert fig._suptitle.get_text() == "moco_zca pretraining on Dataset990_X, 3d_cpu"
    for ax in fig.axes:
        ticks = [tick for tick in ax.get_xticks() if ax.get_xlim()[0] <= tick <= ax.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
        legend = ax.get_legend()
        if legend is not None:  # beside the axes, never over a curve
            assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_progress_rank_starts_at_zero_with_the_largest_possible_rank_marked():
    fig = progress_figure(_log(3, heldout_every=1), rank_limits={"raw bottleneck": 80, "held-out raw bottleneck": 80})
    rank_ax = next(ax for ax in fig.axes if ax.get_ylabel().startswith("effective rank"))
    labels = [line.get_label() for line in rank_ax.get_lines()]
    assert "largest possible rank 80 (raw bottleneck, held-out raw bottleneck)" in labels
    assert rank_ax.get_ylim()[0] == 0 and rank_ax.get_ylim()[1] >= 80


def test_progress_marks_a_loss_term_that_starts_late():
    log = _log(4, heldout_every=None)
    log["loss_global"] = [0.0, 3.0, 3.0, 3.0]  # MoCo's global InfoNCE waits for real keys in its queue
    labels = [label for label in _all_labels(progress_figure(log)) if "term starts" in label]
    assert labels == ["global term starts: the total steps up (not a divergence)"]
    at = progress_figure(log, term_starts={"loss_global": 0.3})
    marker = next(line for ax in at.axes for line in ax.get_lines() if "term starts" in line.get_label())
    assert list(marker.get_xdata()) == [0.3, 0.3]  # where the trainer saw it start


def _all_labels(fig) -> list[str]:
    return [line.get_label() for ax in fig.axes for line in ax.get_lines()]


def _dense_log(epochs: int) -> dict:
    """A dense method's log: voxel and restoration terms, six ranked representations, held-out ranks of each."""
    log = _log(epochs, heldout_every=2)
    names = [f"level {i}" for i in range(5)] + ["concatenation"]
    log.update(loss_global=[None] * epochs, loss_voxel=[1.5] * epochs, loss_restore=[0.3] * epochs,
               erank=[{n: 2.0 + i for i, n in enumerate(names)}] * epochs,
               heldout_erank=[{n: 3.0 for n in names} if e % 2 else None for e in range(epochs)])
    return log


def _panels(fig) -> list[list]:
    """The lines of each panel (an axis and any axis sharing its position)."""
    panels: dict[tuple, list] = {}
    for ax in fig.axes:
        panels.setdefault(tuple(np.round(ax.get_position().bounds, 6)), []).extend(ax.get_lines())
    return list(panels.values())


def test_progress_shows_the_online_probe_at_the_probed_epochs_and_its_random_init_reference_across_the_panel():
    fig = progress_figure(_log(7, heldout_every=3, probe_every=2))
    lines = _lines(fig)
    assert len(fig.axes) == 7
    assert lines["online probe mean Dice"] == ([1, 3, 5], [0.3125, 0.4375, 0.5625])
    assert lines["online probe mean Dice, random init"] == ([-0.5, 6.5], [0.125, 0.125])
    reference = next(line for ax in fig.axes for line in ax.get_lines()
                     if line.get_label() == "online probe mean Dice, random init")
    assert reference.get_linestyle() == "--"
    probe_panel = next(p for p in _panels(fig) if any(line.get_label() == "online probe mean Dice" for line in p))
    assert {line.get_label() for line in probe_panel} == {"online probe mean Dice",
                                                         "online probe mean Dice, random init"}


def test_progress_shows_the_probe_panel_before_any_heldout_value():
    lines = _lines(progress_figure(_log(4, heldout_every=9, probe_every=1)))  # held-out not yet due, probe every epoch
    assert lines["online probe mean Dice"] == ([0, 1, 2, 3], [0.25, 0.3125, 0.375, 0.4375])
    assert not any(label.startswith("held-out") and "rank" not in label for label in lines)


@pytest.mark.parametrize("log", [_log(5, heldout_every=2), _log(3, heldout_every=None), _dense_log(6),
                                 _log(6, heldout_every=2, probe_every=3)],
                         ids=["moco_heldout", "moco", "dense_14_curves", "moco_heldout_probe"])
def test_progress_curves_of_a_panel_never_share_a_colour(log):
    panels = _panels(progress_figure(log))
    assert len(panels) == 5 + ("heldout_loss" in log) + ("probe_dice" in log)
    for lines in panels:
        colours = [to_rgba(line.get_color()) for line in lines if not line.get_label().startswith("largest")]
        assert len(set(colours)) == len(colours), [line.get_label() for line in lines]


@pytest.mark.parametrize("n", [1, 10, 14, 20, 33])
def test_distinct_colours_are_distinct(n):
    colours = distinct_colours(n)
    assert len(colours) == n and len({tuple(np.round(c, 6)) for c in colours}) == n
