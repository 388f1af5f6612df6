"""Data: unlabelled preprocessing on the target's plans (and, later, the two-view sampler)."""
