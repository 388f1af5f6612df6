"""Fixed intensity scales in the network's input units (nnU-Net-normalised), read from the plans.

nnU-Net's CT normalisation clips each channel to the foreground's [0.5, 99.5] percentiles and z-scores it with the
foreground mean and sd (`foreground_intensity_properties_per_channel` of the plans), so a fixed HU value is a fixed
number at the network input. Two scales are derived from that:

- `unit_ranges`: per channel (lo, hi) such that (x − lo) / (hi − lo) maps the clip range to [0, 1]. Kats et al.
  (2024, arXiv 2401.06473) compute the restoration MSE on CT clipped to [−175, 250] HU and scaled to [0, 1]; the
  plans' clip range is the same idea for whatever the target's CT statistics are. A non-CT channel is z-scored per
  image, and its stated equivalent is ±3 sd → [0, 1].
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


def _ct_properties(plans: dict, channel: int) -> dict:
    props = plans.get("foreground_intensity_properties_per_channel", {}).get(str(channel))
    if props is None:
        raise ValueError(f"the plans have no foreground intensity properties for channel {channel}, which their "
                         f"CT normalisation needs; re-plan the dataset with nnUNetv2_plan_and_preprocess")
    return props


def _to_network_units(hu: float, props: dict) -> float:
    return (hu - float(props["mean"])) / max(float(props["std"]), 1e-8)


def unit_ranges(plans: dict, configuration: dict) -> list[tuple[float, float]]:
    """(lo, hi) per channel: the CT clip range [p0.5, p99.5] in network units, or ±3 sd for non-CT channels."""
    out = []
    for c, scheme in enumerate(configuration["normalization_schemes"]):
        if scheme != CT_SCHEME:
            out.append(NON_CT_UNIT_RANGE)
            continue
        props = _ct_properties(plans, c)
        lo = _to_network_units(float(props["percentile_00_5"]), props)
        hi = _to_network_units(float(props["percentile_99_5"]), props)
        out.append((lo, hi) if hi > lo else (lo, lo + 1.0))
    return out


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
