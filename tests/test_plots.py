"""Spectrum plot styling: one colour per method and representation, one line style per seed."""
from __future__ import annotations

import numpy as np

from nnssl_plugin.plots import curve_group, curve_styles, plot_spectrum

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
