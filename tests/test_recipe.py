"""Recipes: defaults per family, tags only for departures, the per-step schedule, the run record and --c checks."""
from __future__ import annotations

import math

import pytest
import torch

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.config import default_recipe
from nnssl_plugin.recipe import NNUNET, Recipe, build_recipe as _build, run_hash, run_tag as _tag
from nnssl_plugin.run_record import RENAMED_OPTIONS, check_resumed_recipe, run_settings, write_run_record
from nnssl_plugin.schedules import StepwiseLRScheduler, recipe_lr


def build_recipe(family, *args, **kwargs):
    return _build(default_recipe(family), *args, **kwargs)


def run_tag(recipe, family, options=None):
    return _tag(recipe, default_recipe(family), options)


def test_default_recipe_has_no_tag_and_any_change_has_one():
    assert run_tag(default_recipe("moco"), "moco") is None
    assert run_tag(default_recipe("hier"), "hier", {}) is None
    changed = build_recipe("hier", lr=1e-3)
    tag = run_tag(changed, "hier")
    assert tag is not None and len(tag) == 8 and int(tag, 16) >= 0
    assert tag != run_tag(build_recipe("hier", lr=2e-3), "hier")
    assert run_tag(build_recipe("hier", lr=default_recipe("hier").lr), "hier") is None  # same values: same run
    with_option = run_tag(default_recipe("hier"), "hier", {"restoration_weight": 1.0})
    assert with_option is not None and with_option != run_tag(default_recipe("hier"), "hier", {"temperature": 0.2})


def test_nnunet_preset_is_nnunets_supervised_sgd():
    r = build_recipe("moco", "nnunet")
    assert (r.optimizer, r.lr, r.momentum, r.schedule, r.grad_clip, r.warmup_steps) == ("sgd", 1e-2, 0.99, "poly",
                                                                                        12.0, 0)
    assert r == NNUNET


@pytest.mark.parametrize("field,value", [("optimizer", "lamb"), ("schedule", "step"), ("lr", 0.0), ("momentum", 1.0),
                                         ("weight_decay", -1.0), ("warmup_steps", -1), ("grad_clip", 0.0),
                                         ("batch_size", 0)])
def test_invalid_recipe_fields_are_refused(field, value):
    with pytest.raises(ValueError):
        Recipe(**{field: value})


def test_round_trip_and_unknown_fields():
    r = build_recipe("moco", weight_decay=0.5, batch_size=4)
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="unknown recipe fields"):
        Recipe.from_dict({**r.to_dict(), "nesterov": True})


def test_recipe_lr_closed_forms():
    assert recipe_lr(0, 100, 1.0, 10, "cosine") == pytest.approx(0.1)
    assert recipe_lr(9, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert recipe_lr(10, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert recipe_lr(55, 100, 1.0, 10, "cosine") == pytest.approx(0.5)  # half-way through the decay: cos(pi/2) = 0
    assert recipe_lr(100, 100, 1.0, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert recipe_lr(55, 100, 1.0, 10, "poly") == pytest.approx(0.5 ** 0.9)
    assert recipe_lr(77, 100, 3e-4, 0, "constant") == 3e-4
    assert recipe_lr(25, 100, 2.0, 0, "cosine") == pytest.approx(1.0 + math.cos(math.pi / 4))


def test_stepwise_scheduler_resumes_at_the_epoch_nnunet_passes():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = StepwiseLRScheduler(opt, 1.0, iterations_per_epoch=5, total_epochs=4, warmup_steps=3, schedule="cosine")
    seen = []
    for epoch in range(4):
        sched.step(epoch)  # nnU-Net's call at each epoch start
        for _ in range(5):
            seen.append(opt.param_groups[0]["lr"])
            sched.advance()
    assert seen == pytest.approx([recipe_lr(i, 20, 1.0, 3, "cosine") for i in range(20)])
    fresh = StepwiseLRScheduler(opt, 1.0, 5, 4, 3, "cosine")
    fresh.step(2)  # --c at epoch 2
    assert opt.param_groups[0]["lr"] == pytest.approx(seen[10])


def test_run_record_tagged_recipe_and_resume_checks(tmp_path):
    assert run_settings(tmp_path, "hier", None) == (default_recipe("hier"), {})
    recipe, options = build_recipe("hier", lr=1e-3), {"restoration_weight": 1.0}
    with pytest.raises(NnsslError, match="nnssl_run.json is missing"):
        run_settings(tmp_path, "hier", run_hash(recipe, options))
    write_run_record(tmp_path, recipe, None, options)
    assert run_settings(tmp_path, "hier", run_hash(recipe, options)) == (recipe, options)
    with pytest.raises(NnsslError, match="not the r"):
        run_settings(tmp_path, "hier", "0" * 8)
    with pytest.raises(NnsslError, match="method options"):
        check_resumed_recipe(recipe.to_dict(), recipe, "ckpt", {}, options)
    check_resumed_recipe(recipe.to_dict(), recipe, "ckpt")
    with pytest.raises(NnsslError, match="from before per-method recipes"):
        check_resumed_recipe(None, recipe, "ckpt")
    with pytest.raises(NnsslError, match="was trained with recipe"):
        check_resumed_recipe(default_recipe("hier").to_dict(), recipe, "ckpt")


def test_method_options_are_typed_by_the_config_field_and_unknown_ones_refused():
    from nnssl_plugin.config import method_config, parse_option, with_options

    hier, zca = method_config("hier"), method_config("moco_zca")
    assert parse_option(hier, "restoration_weight", "1") == 1.0 and isinstance(parse_option(hier, "num_voxels", "8"), int)
    assert parse_option(hier, "flips", "true") is True and parse_option(zca, "whitening_mode", "running") == "running"
    assert parse_option(zca, "queue_size", "none") is None
    assert parse_option(zca, "view_scale", "0.7,1.4") == (0.7, 1.4) and parse_option(zca, "view_scale", "none") is None
    assert with_options(hier, {"restoration_weight": 1.0}).restoration_weight == 1.0
    for key, text in (("method", "moco"), ("family", "moco"), ("no_such_field", "1"), ("num_voxels", "many")):
        with pytest.raises(ValueError):
            parse_option(hier, key, text)
    with pytest.raises(ValueError, match="not options"):
        with_options(hier, {"family": "moco"})


def test_the_run_record_keeps_the_checkpoint_interval_and_refuses_zero(tmp_path):
    import json

    from nnssl_plugin.config import default_recipe

    write_run_record(tmp_path, default_recipe("hier"), None, None, "amp", 5)
    assert json.loads((tmp_path / "nnssl_run.json").read_text())["save_every"] == 5
    write_run_record(tmp_path, default_recipe("hier"), None)
    assert json.loads((tmp_path / "nnssl_run.json").read_text())["save_every"] == 1
    with pytest.raises(ValueError, match="save_every must be at least 1"):
        write_run_record(tmp_path, default_recipe("hier"), None, None, "amp", 0)


def test_a_run_recorded_under_old_option_names_is_refused_in_one_line_naming_the_new_ones(tmp_path):
    """A fold folder whose nnssl_run.json records moco_zca's options as the plugin named them before the rename
    (zca_diagonal, zca_momentum): the trainer name's tag matches the record, and the run is still refused."""
    recipe, old = default_recipe("moco"), {"zca_diagonal": True, "zca_momentum": 0.02}
    write_run_record(tmp_path, recipe, None, old)
    with pytest.raises(NnsslError) as refused:
        run_settings(tmp_path, "moco", run_hash(recipe, old))
    line = str(refused.value)
    assert "\n" not in line and "zca_diagonal -> whitening_per_channel" in line and \
        "zca_momentum -> whitening_update_weight" in line and "start the run again with nnssl_pretrain" in line


def test_every_renamed_option_is_gone_and_its_new_name_is_an_option():
    from dataclasses import fields

    from nnssl_plugin.methods.moco.config import MocoConfig

    names = {f.name for f in fields(MocoConfig)}
    assert not set(RENAMED_OPTIONS) & names and set(RENAMED_OPTIONS.values()) <= names
