"""`nnssl_run.json` in a pretraining run's fold folder: the run's recipe, method options, held-out evaluation
settings, autocast precision and checkpoint interval.

The trainer name carries only a hash of a non-default recipe and the method options (`_r<hash>`); this file carries
their values, so that
nnU-Net's own entry (which passes nothing but the name) rebuilds the same run, also under DDP and on `--c`.
`nnssl_pretrain` writes it before training; the trainer writes it again at the start as the record of what ran.
"""
from __future__ import annotations

from pathlib import Path

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.io_utils import atomic_write_json, load_json
from nnssl_plugin.config import default_recipe
from nnssl_plugin.recipe import Recipe, run_hash

FILE = "nnssl_run.json"


# method options renamed in 0.1 (old -> new): a run recorded under an old name is refused in one line, never translated
# (the names enter the run name's `_r<hash>`, so a renamed run is another run)
RENAMED_OPTIONS = {"momentum": "key_momentum", "queue_min_size": "queue_size_floor",
                   "min_queue_keys": "global_loss_min_keys", "zca": "bottleneck_whitening",
                   "zca_diagonal": "whitening_per_channel", "zca_eps": "whitening_eps", "zca_mode": "whitening_mode",
                   "zca_momentum": "whitening_update_weight", "zca_batch_share": "whitening_batch_share",
                   "zca_min_images_per_channel": "whitening_min_images_per_channel"}

PRECISIONS = ("amp", "bf16")  # amp: nnU-Net's (fp16 autocast + GradScaler on CUDA, none elsewhere)


def write_run_record(folder: str | Path, recipe: Recipe, heldout: dict | None, options: dict | None = None,
                     precision: str = "amp", save_every: int = 1, session: dict | None = None) -> Path:
    """Write the record. `session` (what `nnssl_pretrain` passes: whether it continued, with its precision and
    checkpoint interval) is appended to the record's `sessions` list on `--c` and starts it anew otherwise, so a
    run resumed with another `--bf16` / `--save-every` keeps each part's settings; the top-level `precision` and
    `save_every` are the current ones (what the trainer uses). Without `session` the list is kept as it is."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if save_every < 1:
        raise ValueError(f"save_every must be at least 1, got {save_every}")
    path = Path(folder) / FILE
    previous = read_run_record(folder) if path.is_file() else None
    sessions = list((previous or {}).get("sessions") or [])
    if session is not None:
        entry = {**session, "precision": precision, "save_every": int(save_every)}
        sessions = [*sessions, entry] if session.get("continued") else [entry]
    atomic_write_json(path, {"recipe": recipe.to_dict(), "method_options": dict(options or {}),
                             "hash": run_hash(recipe, options), "heldout": heldout, "precision": precision,
                             "save_every": int(save_every), "sessions": sessions})
    return path


def read_run_record(folder: str | Path) -> dict | None:
    path = Path(folder) / FILE
    return load_json(path) if path.is_file() else None


def run_settings(folder: str | Path, family: str, tag: str | None) -> tuple[Recipe, dict]:
    """(recipe, method options) a trainer name implies: the family's default recipe and no options without a tag,
    else those recorded in the fold folder, whose hash must equal the tag."""
    if tag is None:
        return default_recipe(family), {}
    record = read_run_record(folder)
    if record is None:
        raise NnsslError(f"the trainer name carries recipe tag r{tag} but {Path(folder) / FILE} is missing; start "
                         f"the run with nnssl_pretrain (it writes the recipe there)")
    refuse_renamed_options(record.get("method_options", {}), Path(folder) / FILE)
    recipe, options = Recipe.from_dict(record["recipe"]), record.get("method_options", {})
    if run_hash(recipe, options) != tag:
        raise NnsslError(f"{Path(folder) / FILE} holds recipe r{run_hash(recipe, options)}, not the r{tag} of the "
                         f"trainer name; start the run again with nnssl_pretrain and the recipe flags you want")
    return recipe, options


def refuse_renamed_options(options: dict, where: str | Path) -> None:
    """One line naming the fix for method options recorded under names that have changed since (RENAMED_OPTIONS)."""
    old = [name for name in options if name in RENAMED_OPTIONS]
    if old:
        renames = ", ".join(f"{name} -> {RENAMED_OPTIONS[name]}" for name in old)
        raise NnsslError(f"{where} records method options under names that have changed ({renames}); start the run "
                         f"again with nnssl_pretrain and the new option names (it gets a new run name)")


def check_resumed_recipe(recorded: dict | None, recipe: Recipe, checkpoint: str, recorded_options: dict | None = None,
                         options: dict | None = None) -> None:
    """`--c` refuses a checkpoint trained with another recipe or other method options, or one from before recipes
    were recorded."""
    if recorded is None:
        raise NnsslError(f"{checkpoint} comes from before per-method recipes (it records none) and cannot be "
                         f"continued with today's recipe; start a fresh run (without --c), or export it as it is")
    if Recipe.from_dict(recorded) != recipe or dict(recorded_options or {}) != dict(options or {}):
        raise NnsslError(f"{checkpoint} was trained with recipe {recorded} and method options "
                         f"{recorded_options or {}}, this run's are {recipe.to_dict()} and {options or {}}; pass the same flags as the original "
                         f"run, or start a fresh run without --c")


def refuse_other_method(checkpoint: dict, method: str, source: str) -> None:
    """`--c` refuses a checkpoint written by another method's run (its `trainer_name`, compared as a string): a
    `moco` checkpoint resumed as `moco_zca` would otherwise end in a state-dict size mismatch."""
    from nnssl_plugin.trainer_names import method_of

    recorded = method_of(str(checkpoint.get("trainer_name", "")))
    if recorded is not None and recorded != method:
        raise NnsslError(f"{source} was written by a {recorded} run (trainer {checkpoint['trainer_name']}), this run "
                         f"is {method}; resume it with -m {recorded}, or start this run without --c in its own folder")
