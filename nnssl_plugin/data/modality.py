"""Is the unlabelled set of the target's modality? Its channel names against the target's normalisation.

`nnssl_prepare` normalises the unlabelled images with the *target's* plans (its `normalization_schemes` and
intensity statistics). The unlabelled set has no plans of its own, so what it would get is derived the way nnU-Net's
planner derives it: each channel name through nnU-Net's channel-name → normalisation mapping
(`nnunetv2.preprocessing.normalization.map_channel_name_to_normalization.get_normalization_scheme`: 'CT' →
CTNormalization, 'noNorm', 'rescale_to_0_1', 'rgb_to_0_1', anything else → ZScoreNormalization), compared channel by
channel with the scheme in the target's plans for the configuration:

- the same scheme, another name (`T1` here, `T2` there; both z-score): a warning line, the set is prepared;
- another scheme (`T1` → z-score here, `CT` → CT normalisation there: MRI intensities clipped and scaled with the
  target's Hounsfield statistics): refused in one line, unless the caller goes ahead on purpose (`allow`), which
  then warns.

Names equal up to case are the same channel (nnU-Net's mapping ignores case).
"""
from __future__ import annotations

from nnssl_plugin.errors import NnsslError

ALLOW_FLAG = "--other-normalization"


def derived_scheme(channel_name: str) -> str:
    """The normalisation nnU-Net's planner gives a channel of this name (class name, as plans store it)."""
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    return get_normalization_scheme(str(channel_name)).__name__


def check_modality(dataset: str, channels: dict, target: str, target_channels: dict, target_schemes: list[str],
                   allow: bool = False) -> str | None:
    """Compare `dataset`'s channel names (dataset.json `channel_names`, index → name) with the target's names and
    the target plans' `normalization_schemes` (one per channel, same order; the counts were checked before).
    Returns a warning line, or None when the names agree; raises NnsslError when a scheme differs and not `allow`."""
    names = [str(channels[k]) for k in sorted(channels, key=int)]
    target_names = [str(target_channels[k]) for k in sorted(target_channels, key=int)]
    differing, renamed = [], []
    for i, (name, target_name, scheme) in enumerate(zip(names, target_names, target_schemes)):
        ours = derived_scheme(name)
        if ours != scheme:
            differing.append(f"channel {i} '{name}' ({ours}; the target's '{target_name}': {scheme})")
        elif name.casefold() != target_name.casefold():
            renamed.append(f"channel {i} '{name}' (the target's '{target_name}'; both {scheme})")
    if differing and not allow:
        raise NnsslError(f"{dataset}'s channel names ask for another normalisation than {target}'s plans, which "
                         f"nnssl_prepare would apply: {'; '.join(differing)}; pretrain on images of the target's "
                         f"modality (or fix channel_names in {dataset}'s dataset.json), or pass {ALLOW_FLAG} to "
                         f"normalise them as the target's on purpose")
    if differing:
        return (f"{ALLOW_FLAG}: {dataset} is normalised with {target}'s plans although its channel names ask for "
                f"another normalisation: {'; '.join(differing + renamed)}")
    if renamed:
        return (f"{dataset}'s channel names differ from {target}'s under the same normalisation: "
                f"{'; '.join(renamed)}; preparing with the target's plans (check that the modality is the same)")
    return None
