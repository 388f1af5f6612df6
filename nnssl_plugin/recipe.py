"""Optimiser recipes of pretraining: one frozen object per run, a default per method family, a short tag in the run
name when a run departs from its default.

nnU-Net's supervised recipe (SGD, Nesterov momentum 0.99, lr 1e-2, poly decay, gradient clip 12) is what every
method trained with before; the papers' code trains differently: SGD momentum 0.9 with warm-up and cosine decay for
the MoCo family (Chen et al. 2020, MoCo v2, arXiv 2003.04297; Hassanpour et al. 2024, arXiv 2402.14611), Adam at a
constant 3e-4 with gradient clip 1.0 for the dense methods (Kats et al. 2024, arXiv 2401.06473). The defaults below
(each family's `RECIPE` in `methods/<family>/config.py`) were compared on the phantom (docs/RESULTS.md, "Recipes"); `nnunet` keeps the old recipe as a preset.

A run's recipe is written to `nnssl_run.json` in its fold folder and into its checkpoints and weights files. A
non-default recipe, or method options (`nnssl_pretrain --option KEY=VALUE`: fields of the method's config), add
`_r<8 hex digits>` (a hash of both) to the trainer name, so two variants never share an output folder.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "poly", "constant")


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw" (Adam with decoupled weight decay)
    lr: float = 1e-2  # peak learning rate, reached after the warm-up
    momentum: float = 0.9  # SGD momentum, or AdamW's beta1
    weight_decay: float = 3e-5
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps, in optimiser steps
    schedule: str = "cosine"  # after the warm-up: cosine to 0, nnU-Net's poly (exponent 0.9) to 0, or constant
    grad_clip: float | None = None  # global gradient-norm clip; None: no clipping
    batch_size: int | None = None  # None: the plans' batch size (nnU-Net's, split over GPUs under DDP as nnU-Net does)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer '{self.optimizer}' unknown; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule '{self.schedule}' unknown; choose one of {', '.join(SCHEDULES)}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise ValueError(f"warm-up steps must be >= 0, got {self.warmup_steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"gradient clip must be > 0 (or omitted), got {self.grad_clip}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown recipe fields {unknown}; known: {sorted(known)}")
        return cls(**values)


# nnU-Net's supervised recipe, the one every method used before per-method recipes existed
NNUNET = Recipe(optimizer="sgd", lr=1e-2, momentum=0.99, weight_decay=3e-5, warmup_steps=0, schedule="poly",
                grad_clip=12.0)

PRESETS: dict[str, Recipe] = {"nnunet": NNUNET}


def run_hash(recipe: Recipe, options: dict | None = None) -> str:
    """8 hex digits identifying a recipe and method options (sha256 of their sorted JSON)."""
    payload = {"recipe": recipe.to_dict(), "method_options": dict(options or {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


def run_tag(recipe: Recipe, default: Recipe, options: dict | None = None) -> str | None:
    """None for the family's default recipe (`config.default_recipe(family)`) without method options, else the hash
    that enters the trainer name as `_r<hash>`."""
    return None if recipe == default and not options else run_hash(recipe, options)


def build_recipe(default: Recipe, preset: str | None = None, **overrides) -> Recipe:
    """The family's default (`config.default_recipe(family)`) or a preset, with the given fields replaced; None
    values are left as they are."""
    base = default if preset is None else PRESETS[preset]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
