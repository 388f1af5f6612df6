"""Fixed intensity scales in the network's input units (nnU-Net-normalised), read from the plans.

nnU-Net's CT normalisation clips each channel to the foreground's [0.5, 99.5] percentiles and z-scores it with the
foreground mean and sd (`foreground_intensity_properties_per_channel` of the plans), so a fixed HU value is a fixed
number at the network input. Two scales are derived from that:

- `unit_ranges`: per channel (lo, hi) such that (x − lo) / (hi − lo) maps the clip range to [0, 1]. Kats et al.
  (2024, arXiv 2401.06473) compute the restoration MSE on CT clipped to [−175, 250] HU and scaled to [0, 1]; the
  plans' clip range is the same idea for whatever the target's CT statistics are. A non-CT channel is z-scored per
  image, and its stated equivalent is ±3 sd → [0, 1].
- `restoration_ranges`: per channel (lo, hi) of Kats et al.'s own restoration scale, [−175, 250] HU → [0, 1], in
  network units (not limited to the clip range: a clip range inside the window maps to a sub-interval of [0, 1]);
  a non-CT channel gets ±3 sd, as in `unit_ranges`.
- `vox2vec_windows`: per channel, the widest and the narrowest intensity window of vox2vec's random windowing
  (Goncharov et al. 2023, arXiv 2307.14725: lower end in [−1350, −1000] HU, upper end in [300, 1000] HU), in
  network units; a non-CT channel gets ±4.5 sd and ±3 sd (the same 1.5× ratio of widths at most as vox2vec's
  ~1.8×, stated equivalent).
- `vox2vec_noise_sd`: per channel, vox2vec's largest noise sd, 30 HU in network units (non-CT: 30 HU relative to
  vox2vec's widest window of 2,350 HU, times the ±4.5 sd window: 0.115 sd).
- `soft_tissue_windows`: per channel (lo, hi), the abdominal soft-tissue window W400 L40 ([−160, 240] HU)
  intersected with the clip range, where intensity augmentations act on organs rather than on air and bone;
  a non-CT channel gets ±2 sd.

Shapes: lists with one (lo, hi) float pair per input channel, in the order of the plans' channels.
"""
from __future__ import annotations

CT_SCHEME = "CTNormalization"
NON_CT_UNIT_RANGE = (-3.0, 3.0)  # z-scored channel: ±3 sd covers ~99.7 % of a Gaussian's voxels
NON_CT_WINDOW = (-2.0, 2.0)
SOFT_TISSUE_HU = (-160.0, 240.0)  # abdominal window, width 400, level 40
KATS_RESTORATION_HU = (-175.0, 250.0)  # Kats et al. 2024: CT clipped to [−175, 250] HU, scaled to [0, 1]
VOX2VEC_WIDEST_HU, VOX2VEC_NARROWEST_HU = (-1350.0, 1000.0), (-1000.0, 300.0)  # vox2vec's window bounds
NON_CT_VOX2VEC = ((-4.5, 4.5), (-3.0, 3.0))
VOX2VEC_NOISE_SD_HU = 30.0  # vox2vec: noise sd drawn in [0, 30] HU


def _ct_properties(plans: dict, channel: int) -> dict:
    props = plans.get("foreground_intensity_properties_per_channel", {}).get(str(channel))
    if props is None:
        raise ValueError(f"the plans have no foreground intensity properties for channel {channel}, which their "
                         f"CT normalisation needs; re-plan the dataset with nnUNetv2_plan_and_preprocess")
    return props


def _to_network_units(hu: float, props: dict) -> float:
    return (hu - float(props["mean"])) / max(float(props["std"]), 1e-8)


def _per_channel(plans: dict, configuration: dict, ct_hu, non_ct: tuple[float, float]) -> list[tuple[float, float]]:
    """(lo, hi) per channel: the HU pair `ct_hu(props)` in network units for CT channels (props: the channel's
    foreground intensity properties), `non_ct` for the others."""
    out = []
    for c, scheme in enumerate(configuration["normalization_schemes"]):
        if scheme != CT_SCHEME:
            out.append(non_ct)
            continue
        props = _ct_properties(plans, c)
        out.append(tuple(_to_network_units(float(hu), props) for hu in ct_hu(props)))
    return out


def unit_ranges(plans: dict, configuration: dict) -> list[tuple[float, float]]:
    """(lo, hi) per channel: the CT clip range [p0.5, p99.5] in network units, or ±3 sd for non-CT channels."""
    ranges = _per_channel(plans, configuration, lambda props: (props["percentile_00_5"], props["percentile_99_5"]),
                          NON_CT_UNIT_RANGE)
    return [(lo, hi) if hi > lo else (lo, lo + 1.0) for lo, hi in ranges]


def _hu_window(plans: dict, configuration: dict, hu: tuple[float, float], non_ct: tuple[float, float]
               ) -> list[tuple[float, float]]:
    """(lo, hi) per channel: the HU window `hu` in network units for CT channels, `non_ct` for the others."""
    return _per_channel(plans, configuration, lambda props: hu, non_ct)


def restoration_ranges(plans: dict, configuration: dict) -> list[tuple[float, float]]:
    """(lo, hi) per channel: [−175, 250] HU in network units (Kats et al.), or ±3 sd for non-CT channels."""
    return _hu_window(plans, configuration, KATS_RESTORATION_HU, NON_CT_UNIT_RANGE)


def vox2vec_windows(plans: dict, configuration: dict) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(widest, narrowest) per channel: vox2vec's [−1350, 1000] and [−1000, 300] HU in network units, or ±4.5 sd
    and ±3 sd for non-CT channels."""
    return (_hu_window(plans, configuration, VOX2VEC_WIDEST_HU, NON_CT_VOX2VEC[0]),
            _hu_window(plans, configuration, VOX2VEC_NARROWEST_HU, NON_CT_VOX2VEC[1]))


def vox2vec_noise_sd(plans: dict, configuration: dict) -> list[float]:
    """Per channel: 30 HU in network units (CT), or the stated non-CT equivalent (0.115 sd)."""
    width_hu = VOX2VEC_WIDEST_HU[1] - VOX2VEC_WIDEST_HU[0]
    non_ct = VOX2VEC_NOISE_SD_HU / width_hu * (NON_CT_VOX2VEC[0][1] - NON_CT_VOX2VEC[0][0])
    return [VOX2VEC_NOISE_SD_HU / max(float(_ct_properties(plans, c)["std"]), 1e-8) if scheme == CT_SCHEME
            else non_ct for c, scheme in enumerate(configuration["normalization_schemes"])]


def soft_tissue_windows(plans: dict, configuration: dict) -> list[tuple[float, float]]:
    """(lo, hi) per channel: [−160, 240] HU within the clip range, or ±2 sd for non-CT channels."""
    out = []
    for c, ((lo, hi), scheme) in enumerate(zip(unit_ranges(plans, configuration),
                                               configuration["normalization_schemes"])):
        if scheme != CT_SCHEME:
            out.append(NON_CT_WINDOW)
            continue
        props = _ct_properties(plans, c)
        w_lo = max(lo, _to_network_units(SOFT_TISSUE_HU[0], props))
        w_hi = min(hi, _to_network_units(SOFT_TISSUE_HU[1], props))
        out.append((w_lo, w_hi) if w_hi > w_lo else (lo, hi))
    return out
