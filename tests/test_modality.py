"""The unlabelled set's channel names against the target's normalisation (nnssl_plugin/data/modality.py): the scheme
each name gets is nnU-Net's own mapping; the schemes compared are the target plans' `normalization_schemes`."""
from __future__ import annotations

import pytest

from nnssl_plugin.data.modality import ALLOW_FLAG, check_modality, derived_scheme
from nnssl_plugin.errors import NnsslError


@pytest.mark.parametrize("name,scheme", [("CT", "CTNormalization"), ("ct", "CTNormalization"),
                                         ("T1", "ZScoreNormalization"), ("FLAIR", "ZScoreNormalization"),
                                         ("noNorm", "NoNormalization"), ("rescale_to_0_1", "RescaleTo01Normalization")])
def test_the_scheme_is_the_one_nnunets_planner_gives_the_name(name, scheme):
    assert derived_scheme(name) == scheme


def test_the_same_names_pass_silently_whatever_their_case():
    assert check_modality("A", {"0": "ct"}, "B", {"0": "CT"}, ["CTNormalization"]) is None


def test_other_names_under_the_same_scheme_warn():
    warning = check_modality("Dataset980_T1", {"0": "T1"}, "Dataset981_T2", {"0": "T2"}, ["ZScoreNormalization"])
    assert warning == ("Dataset980_T1's channel names differ from Dataset981_T2's under the same normalisation: "
                       "channel 0 'T1' (the target's 'T2'; both ZScoreNormalization); preparing with the target's "
                       "plans (check that the modality is the same)")


def test_another_scheme_is_refused_naming_the_channel_and_the_flag():
    with pytest.raises(NnsslError) as raised:
        check_modality("Dataset978_MRI", {"0": "T1"}, "Dataset991_CT", {"0": "CT"}, ["CTNormalization"])
    message = str(raised.value)
    assert "channel 0 'T1' (ZScoreNormalization; the target's 'CT': CTNormalization)" in message
    assert ALLOW_FLAG in message and "\n" not in message


def test_the_flag_goes_ahead_with_a_warning_naming_every_channel():
    warning = check_modality("A", {"0": "T1", "1": "T2"}, "B", {"0": "CT", "1": "T1"},
                             ["CTNormalization", "ZScoreNormalization"], allow=True)
    assert warning.startswith(f"{ALLOW_FLAG}: A is normalised with B's plans")
    assert "channel 0 'T1' (ZScoreNormalization; the target's 'CT': CTNormalization)" in warning
    assert "channel 1 'T2' (the target's 'T1'; both ZScoreNormalization)" in warning


def test_the_plans_scheme_decides_not_the_targets_name():
    """A target planned with a custom scheme for a 'CT' channel: the plans are what nnssl_prepare applies."""
    with pytest.raises(NnsslError, match="channel 0 'CT' \\(CTNormalization; the target's 'CT': ZScoreNormalization\\)"):
        check_modality("A", {"0": "CT"}, "B", {"0": "CT"}, ["ZScoreNormalization"])
