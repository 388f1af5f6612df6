"""Held-out evaluation hook: isolated random streams, the target's data, batches, the dense and MoCo evaluations
against numpy, the log, and (on the phantom world) the whole set-up with a real loader and network."""
from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.families import FAMILIES
from nnssl_plugin.rng import isolated
from nnssl_plugin.methods.hier.heldout import evaluate_hier
from nnssl_plugin.methods.moco.heldout import evaluate_moco
from nnssl_plugin.heldout import (HeldoutConfig, HeldoutEvaluator, batch_seed, batches_for_rank, draw_heldout_batch,
                                  draw_heldout_batches, 
                                  locate_target_data, shared_cases)
from nnssl_plugin.ssl_logging import HELDOUT_KEYS, SSLLocalLogger, log_heldout

CPU = torch.device("cpu")


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _numpy_erank(z: np.ndarray) -> float:
    s = np.linalg.svd(z - z.mean(0), compute_uv=False)
    p = s / s.sum()
    p = p[p > 1e-12]
    return float(np.exp(-(p * np.log(p)).sum()))


# ----- random streams -----------------------------------------------------------------------------------------------
def test_isolated_rng_seeds_the_block_and_leaves_the_outer_streams_untouched():
    _seed_all(3)
    expected_after = _draws()
    _seed_all(11)
    expected_inside = _draws()
    _seed_all(3)
    with isolated(11):
        inside = _draws()
        _draws()  # more consumption inside must not matter outside
    assert inside == expected_inside
    assert _draws() == expected_after


def test_isolated_rng_restores_the_streams_when_the_block_raises():
    _seed_all(5)
    expected = _draws()
    _seed_all(5)
    with pytest.raises(RuntimeError):
        with isolated(1):
            _draws()
            raise RuntimeError("boom")
    assert _draws() == expected


def test_batch_seeds_repeat_and_differ_between_batches():
    assert batch_seed(0, 3) == batch_seed(0, 3)
    assert len({batch_seed(s, i) for s in range(3) for i in range(50)}) == 150


# ----- batches --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels,batch_size", [(80, 2), (81, 2), (5, 3), (320, 4), (1, 7)])
def test_batches_for_rank_give_the_fewest_batches_with_four_crops_per_channel(channels, batch_size):
    n = batches_for_rank(channels, batch_size)
    assert n * batch_size >= 4 * channels > (n - 1) * batch_size


class RandomLoader:
    """A stand-in for TwoViewDataLoader that draws from all three global streams, as the real loader and its
    augmentations do."""
    batch_size = 2

    def __init__(self, voxels=(5, 9, 7)):
        self.voxels = voxels

    def generate_train_batch(self) -> dict:
        v = self.voxels[np.random.randint(len(self.voxels))]
        views = torch.randn(4, 1, 4, 4, 4) + random.random()
        return {"view1": views[:2], "view2": views[2:], "clean1": views[:2], "clean2": views[2:],
                "voxels1": torch.randint(0, 4, (v, 3)), "voxels2": torch.randint(0, 4, (v, 3)),
                "voxel_batch": torch.arange(v) % 2, "start1": torch.zeros(2, 3, dtype=torch.long),
                "start2": torch.ones(2, 3, dtype=torch.long), "mirror1": torch.zeros(2, 3, dtype=torch.bool),
                "mirror2": torch.zeros(2, 3, dtype=torch.bool), "keys": ["a", "b"]}


def _equal_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
        for x, y in zip(a, b))


def test_heldout_batches_are_the_same_crops_on_every_draw_and_leave_the_streams_alone():
    loader = RandomLoader()
    _seed_all(0)
    expected = _draws()
    _seed_all(0)
    first = draw_heldout_batches(loader, 4, seed=7)
    assert _draws() == expected
    assert _equal_batches(first, draw_heldout_batches(loader, 4, seed=7))
    assert _equal_batches(first[2:3], [draw_heldout_batch(loader, 7, 2)])  # any batch can be redrawn alone
    assert not torch.equal(first[0]["view1"], first[1]["view1"])
    assert not torch.equal(first[0]["view1"], draw_heldout_batches(loader, 1, seed=8)[0]["view1"])


# ----- fakes of OUR networks (the contracts the evaluations use) ------------------------------------------------------
class Encoder(nn.Module):
    """A 1x1x1 convolution as the 'encoder': stage outputs [x, conv(x)], so the pooled bottleneck of a crop is
    W · mean(crop) + b, computable in numpy."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(1, channels, 1)
        self.output_channels = [1, channels]

    def forward(self, x):
        return [x, self.conv(x)]


class FakeMoco(nn.Module):
    """The MoCo network's pair_embeddings contract: q, k unit (n, d), raw (n, c) pooled bottleneck of view 1,
    whitened (n, c) or None. Records its mode at each call."""

    def __init__(self, channels: int = 6, whitened: bool = True):
        super().__init__()
        self.config = SimpleNamespace(family="moco", temperature=0.2)
        self.encoder = Encoder(channels)
        self.kept_in_eval = nn.Linear(1, 1)  # a submodule in eval while the network trains (as the EMA encoder)
        self.whiten = whitened
        self.calls = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.kept_in_eval.train(False)
        return self

    def pair_embeddings(self, view1, view2) -> dict:
        self.calls.append((self.training, torch.is_grad_enabled()))
        raw = self.encoder(view1)[-1].flatten(2).mean(2)  # (n, c)
        key = self.encoder(view2)[-1].flatten(2).mean(2)
        scale = torch.arange(1.0, raw.shape[1] + 1)
        return {"q": F.normalize(raw, dim=1), "k": F.normalize(key, dim=1), "raw": raw,
                "whitened": raw * scale if self.whiten else None}


class FakeDense(nn.Module):
    """The dense forward contract: terms["loss_voxel"], top1, from the batch's tensors and geometry."""

    def __init__(self, channels: int = 5):
        super().__init__()
        self.config = SimpleNamespace(family="hier")
        self.encoder = Encoder(channels)
        self.calls = []

    def forward(self, view1, view2, voxels1, voxels2, voxel_batch, clean1=None, clean2=None, **geometry) -> dict:
        self.calls.append((self.training, torch.is_grad_enabled(), sorted(geometry)))
        v = voxels1.shape[0]
        loss = view1.mean() + view2.mean() + self.encoder.conv.bias.sum()
        return {"loss": loss, "terms": {"loss_voxel": loss}, "top1": (v % 7) / 7, "embeddings": {}}


def _pooled_numpy(net: nn.Module, views: np.ndarray) -> np.ndarray:
    w = net.encoder.conv.weight.detach().numpy().reshape(-1)  # (c,)
    b = net.encoder.conv.bias.detach().numpy()
    return views.reshape(len(views), -1).mean(1)[:, None] * w[None] + b[None]  # (n, c)


def test_moco_evaluation_is_infonce_over_all_heldout_keys_as_numpy_computes_it():
    torch.manual_seed(0)
    net = FakeMoco().train()
    batches = draw_heldout_batches(RandomLoader(), 5, seed=1)
    out = evaluate_moco(net, batches, CPU)

    v1 = np.concatenate([b["view1"].numpy() for b in batches])
    v2 = np.concatenate([b["view2"].numpy() for b in batches])
    raw, key = _pooled_numpy(net, v1), _pooled_numpy(net, v2)
    q = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    k = key / np.linalg.norm(key, axis=1, keepdims=True)
    logits = q @ k.T / 0.2  # (M, M)
    m = len(q)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    assert out["crops"] == m == 10 and out["negatives"] == m - 1 and out["chance"] == pytest.approx(1 / m)
    assert out["loss"] == pytest.approx(float(np.mean(lse - np.diag(logits))), rel=1e-5)
    assert out["top1"] == pytest.approx(float(np.mean(logits.argmax(1) == np.arange(m))))
    assert out["erank"]["raw bottleneck"] == pytest.approx(_numpy_erank(raw), rel=1e-4)
    assert out["erank"]["whitened bottleneck"] == pytest.approx(_numpy_erank(raw * np.arange(1, 7)), rel=1e-4)
    assert net.calls == [(False, False)] * 5, "eval mode, no gradient"
    assert net.training and not net.kept_in_eval.training, "every submodule's mode restored"


def test_moco_evaluation_without_whitening_reports_the_raw_rank_only():
    out = evaluate_moco(FakeMoco(whitened=False), draw_heldout_batches(RandomLoader(), 2, seed=1), CPU)
    assert set(out["erank"]) == {"raw bottleneck"}


def test_dense_evaluation_averages_the_training_forwards_terms_with_2v_minus_2_negatives():
    torch.manual_seed(0)
    net = FakeDense().train()
    batches = draw_heldout_batches(RandomLoader(voxels=(5, 9, 7, 12)), 6, seed=2)
    out = evaluate_hier(net, batches, CPU)

    v = np.array([b["voxels1"].shape[0] for b in batches], dtype=np.float64)
    bias = float(net.encoder.conv.bias.sum())
    losses = [b["view1"].numpy().mean() + b["view2"].numpy().mean() + bias for b in batches]
    assert out["loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)
    assert out["top1"] == pytest.approx(float(np.mean((v % 7) / 7)))
    assert out["negatives"] == pytest.approx(float(np.mean(2 * v - 2)))
    assert out["chance"] == pytest.approx(float(np.mean(1 / (2 * v - 1))))
    raw = _pooled_numpy(net, np.concatenate([b["view1"].numpy() for b in batches]))
    assert out["crops"] == 12 and out["erank"] == {"raw bottleneck": pytest.approx(_numpy_erank(raw), rel=1e-4)}
    assert net.calls == [(False, False, ["mirror1", "mirror2", "start1", "start2"])] * 6
    assert net.training


def _family_evaluation(network, *args) -> dict:
    """The evaluation the trainer hands the hook, from the family table, for either fake network."""
    return FAMILIES[network.config.family].heldout(network, *args)


def _evaluator(loader, num_batches=3, **config) -> HeldoutEvaluator:
    return HeldoutEvaluator(loader, "Dataset991_T", num_batches, HeldoutConfig(**config), None, "", _family_evaluation)


def _train(hook: bool) -> dict:
    """Four SGD steps on data from all three global streams; with `hook`, a held-out evaluation after each."""
    _seed_all(0)
    net = FakeMoco()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    evaluator = _evaluator(RandomLoader())
    for _ in range(4):
        x = torch.randn(2, 1, 4, 4, 4) + float(np.random.rand()) + random.random()
        optimizer.zero_grad()
        net.pair_embeddings(x, x.flip(2))["raw"].pow(2).mean().backward()
        optimizer.step()
        if hook:
            evaluator.evaluate(net, CPU)
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_a_run_with_the_hook_trains_bit_for_bit_like_one_without():
    with_hook, without = _train(True), _train(False)
    assert all(torch.equal(with_hook[k], without[k]) for k in without)


def test_evaluations_repeat_exactly_and_are_due_every_k_epochs_and_at_the_last():
    evaluator = _evaluator(RandomLoader(), every=3)
    net = FakeMoco()
    assert evaluator.evaluate(net, CPU) == evaluator.evaluate(net, CPU)
    assert [e for e in range(10) if evaluator.due(e, 10)] == [2, 5, 8, 9]
    assert "loss" in evaluator.summary(evaluator.evaluate(FakeDense(), CPU))


def _ddp_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = {}
        for name, make in (("moco", FakeMoco), ("dense", FakeDense)):
            torch.manual_seed(0)  # the same weights on both ranks, as DDP broadcasts them
            results[name] = _evaluator(RandomLoader(voxels=(5, 9, 7, 12)), num_batches=4).evaluate(make(), CPU)
        torch.save(results, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_under_ddp_each_rank_evaluates_its_share_and_every_rank_gets_the_global_values(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0] == ranks[1]
    loader = RandomLoader(voxels=(5, 9, 7, 12))
    torch.manual_seed(0)
    single = _evaluator(loader, num_batches=4).evaluate(FakeMoco(), CPU)  # MoCo: the same M pairs, another order
    for key in ("loss", "top1", "chance", "negatives", "crops"):
        assert ranks[0]["moco"][key] == pytest.approx(single[key], rel=1e-5), key
    assert ranks[0]["moco"]["erank"] == pytest.approx(single["erank"], rel=1e-4)
    # dense: a step is rank 0's batch 2s with rank 1's batch 2s + 1; the forward's negatives span both, as in training
    v = np.array([draw_heldout_batch(loader, 0, i)["voxels1"].shape[0] for i in range(4)], dtype=np.float64)
    step = v[0::2] + v[1::2]
    assert ranks[0]["dense"]["negatives"] == pytest.approx(float(np.mean(2 * step - 2)))
    assert ranks[0]["dense"]["top1"] == pytest.approx(float(np.mean(((v % 7) / 7 * v).reshape(2, 2).sum(1) / step)))
    assert ranks[0]["dense"]["crops"] == 8
    torch.manual_seed(0)
    dense = _evaluator(loader, num_batches=4).evaluate(FakeDense(), CPU)  # ranks' losses average to the batches'
    assert ranks[0]["dense"]["loss"] == pytest.approx(dense["loss"], rel=1e-5)
    assert ranks[0]["dense"]["erank"] == pytest.approx(dense["erank"], rel=1e-4)


# ----- the target's data ---------------------------------------------------------------------------------------------
def _write_json(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


TARGET = "Dataset981_Target"
PRETRAIN = "Dataset980_Pretrain"


def _plans_pair(root, spacing_now=(1.0, 1.0, 1.0), marker_target=TARGET):
    """A target plans file (as nnU-Net writes it) and the pretraining copy nnssl_prepare would have made of it."""
    fullres = {"data_identifier": "nnUNetPlans_3d_fullres", "spacing": [1.0, 1.0, 1.0], "patch_size": [16, 32, 32],
               "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
               "resampling_fn_data": "resample_data_or_seg_to_shape", "preprocessor_name": "DefaultPreprocessor"}
    target = {"plans_name": "nnUNetPlans", "dataset_name": TARGET, "transpose_forward": [0, 1, 2],
              "foreground_intensity_properties_per_channel": {"0": {"mean": 1.0}},
              "configurations": {"3d_fullres": dict(fullres, spacing=list(spacing_now)),
                                 "3d_cpu": {"inherits_from": "3d_fullres", "patch_size": [8, 16, 16]}}}
    pretrain = json.loads(json.dumps(target))
    pretrain.update(plans_name="nnsslPretrainPlans", dataset_name=PRETRAIN,
                    nnssl_prepare={"target_dataset": marker_target, "target_plans": "nnUNetPlans"})
    pretrain["configurations"]["3d_fullres"] = dict(fullres, data_identifier="nnsslPretrainPlans_3d_fullres")
    _write_json(root / TARGET / "nnUNetPlans.json", target)
    (root / PRETRAIN).mkdir(parents=True, exist_ok=True)
    data = root / TARGET / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True, exist_ok=True)
    (data / "case_0.b2nd").write_bytes(b"")
    return pretrain


def test_the_target_folder_is_the_one_of_the_plans_the_pretraining_plans_copy(fresh_world):
    pretrain = _plans_pair(fresh_world.preprocessed)
    for target in (981, TARGET):
        assert locate_target_data(target, pretrain, "3d_cpu") == (fresh_world.preprocessed / TARGET /
                                                                 "nnUNetPlans_3d_fullres")


def test_a_target_other_than_the_plans_source_is_refused_naming_both_fixes(fresh_world):
    pretrain = _plans_pair(fresh_world.preprocessed, marker_target="Dataset982_Other")
    with pytest.raises(NnsslError, match=r"copied from Dataset982_Other's plans .*use --eval-target Dataset982_Other, "
                                         r"or prepare .*nnssl_prepare -d Dataset980_Pretrain -t 981"):
        locate_target_data(981, pretrain, "3d_cpu")


def test_plans_not_written_by_nnssl_prepare_are_refused(fresh_world):
    pretrain = _plans_pair(fresh_world.preprocessed)
    del pretrain["nnssl_prepare"]
    with pytest.raises(NnsslError, match="not written by nnssl_prepare.*nnssl_prepare -d Dataset980_Pretrain -t 981"):
        locate_target_data(981, pretrain, "3d_cpu")


def test_target_plans_that_changed_since_prepare_are_refused(fresh_world):
    pretrain = _plans_pair(fresh_world.preprocessed, spacing_now=(2.0, 1.0, 1.0))
    with pytest.raises(NnsslError, match="changed since nnssl_prepare.*spacing differs.*--overwrite"):
        locate_target_data(981, pretrain, "3d_cpu")


def test_a_missing_target_folder_or_configuration_names_the_command(fresh_world):
    pretrain = _plans_pair(fresh_world.preprocessed)
    with pytest.raises(NnsslError, match="'2d' is in the pretraining plans but not in Dataset981_Target's"):
        locate_target_data(981, dict(pretrain, configurations={**pretrain["configurations"], "2d": {}}), "2d")
    (fresh_world.preprocessed / TARGET / "nnUNetPlans_3d_fullres" / "case_0.b2nd").unlink()
    with pytest.raises(NnsslError, match="holds no preprocessed cases; run nnUNetv2_preprocess -d 981 -plans_name "
                                         "nnUNetPlans -c 3d_cpu"):
        locate_target_data(981, pretrain, "3d_cpu")


def _save_cases(folder, cases: dict[str, np.ndarray]) -> None:
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in cases.items():
        nnUNetDatasetBlosc2.save_case(data, np.zeros_like(data, dtype=np.int16), {"class_locations": {}},
                                      str(folder / name))


def test_shared_cases_are_same_named_cases_with_the_identical_image(tmp_path):
    g = np.random.default_rng(0)
    a, b, c = (g.normal(size=(1, 4, 6, 6)).astype(np.float32) for _ in range(3))
    _save_cases(tmp_path / "target", {"case_0": a, "case_1": b, "case_2": c})
    _save_cases(tmp_path / "pretrain", {"case_0": a, "case_1": c, "case_9": b})  # same, same name other image, renamed
    assert shared_cases(tmp_path / "target", tmp_path / "pretrain") == ["case_0"]


# ----- the log -------------------------------------------------------------------------------------------------------
VALUES = {"loss": 2.5, "top1": 0.25, "chance": 0.125, "negatives": 7.0, "crops": 8,
          "erank": {"raw bottleneck": np.float64(3.5)}}


def test_heldout_values_are_logged_at_evaluated_epochs_and_none_elsewhere():
    logger = SSLLocalLogger()
    for epoch in range(4):
        log_heldout(logger, epoch, VALUES if epoch in (1, 3) else None)
    log = logger.get_checkpoint()
    assert log["heldout_loss"] == [None, 2.5, None, 2.5] and log["heldout_chance"] == [None, 0.125, None, 0.125]
    rank = log["heldout_erank"][1]
    assert rank == {"raw bottleneck": 3.5} and type(rank["raw bottleneck"]) is float  # weights_only-loadable


def test_a_run_that_gets_the_hook_late_keeps_one_entry_per_epoch():
    late = SSLLocalLogger()
    log_heldout(late, 2, VALUES)
    assert late.get_value("heldout_top1", None) == [None, None, 0.25]


# ----- the phantom world: real data, loader and network -----------------------------------------------------------
PATCH = (8, 24, 24)  # a small crop of the phantom: fast on 2 CPU cores


def _voxel2vec(channels=(4, 4, 4)):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnssl_plugin.config import method_config
    from nnssl_plugin.methods.hier.network import build_hier_network

    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    unet = PlainConvUNet(1, 3, list(channels), nn.Conv3d, 3, strides, 2, 3, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True})
    return build_hier_network(unet, method_config("voxel2vec"), 1, strides, PATCH)


def test_heldout_on_the_phantom_target_is_repeatable_and_changes_nothing(in_world):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnssl_plugin.data.two_view import TwoViewDataLoader

    pretrain_root = in_world.preprocessed / "Dataset990_PhantomUnlabelled"
    plans = json.loads((pretrain_root / "nnsslPretrainPlans.json").read_text())
    labels = LabelManager({"background": 0}, None)

    def make_loader(dataset):
        return TwoViewDataLoader(dataset, 2, list(PATCH), labels, view_transforms=None, num_voxels=64)

    torch.manual_seed(0)
    net = _voxel2vec().train()
    dense = FAMILIES["hier"]
    with pytest.raises(NnsslError, match="use --eval-target Dataset991_PhantomBTCV"):
        HeldoutEvaluator.create(990, plans, "3d_cpu", pretrain_root / "nnsslPretrainPlans_3d_fullres", make_loader,
                                net, 2, dense.heldout, dense.heldout_negatives)
    # the phantom's two sets share case names (phantom_000 ...) but not images: not an overlap
    evaluator = HeldoutEvaluator.create(991, plans, "3d_cpu", pretrain_root / "nnsslPretrainPlans_3d_fullres",
                                        make_loader, net, 2, dense.heldout, dense.heldout_negatives)
    assert evaluator.num_batches == 8 and "16 crops (>= 4 x 4 bottleneck channels" in evaluator.description
    redrawn = HeldoutEvaluator(evaluator.loader, evaluator.target, 8, HeldoutConfig(max_stored_bytes=0), None, "",
                               dense.heldout)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    _seed_all(1)
    expected = _draws()
    _seed_all(1)
    first = evaluator.evaluate(net, CPU)
    assert _draws() == expected
    assert first == evaluator.evaluate(net, CPU) == redrawn.evaluate(net, CPU)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items()) and net.training
    v = np.array([b["voxels1"].shape[0] for b in evaluator.batches()], dtype=np.float64)
    assert first["chance"] == pytest.approx(float(np.mean(1 / (2 * v - 1))))
    assert first["crops"] == 16 and 0 <= first["top1"] <= 1 and math.isfinite(first["loss"])
    assert 1 <= first["erank"]["raw bottleneck"] <= 4
    assert all(set(b["keys"]) <= {f"phantom_{i:03d}" for i in range(6)} for b in evaluator.batches())


def test_moco_evaluation_masks_other_crops_of_the_querys_case_as_numpy_computes_it():
    torch.manual_seed(0)
    net = FakeMoco()
    batches = draw_heldout_batches(RandomLoader(), 4, seed=3)
    cases = np.array([0, 1, 0, 2, 1, 1, 3, 0])  # case of each of the 8 pairs
    for i, b in enumerate(batches):
        b["case_ids"] = torch.from_numpy(cases[2 * i:2 * i + 2])
    out = evaluate_moco(net, batches, CPU)

    raw = _pooled_numpy(net, np.concatenate([b["view1"].numpy() for b in batches]))
    key = _pooled_numpy(net, np.concatenate([b["view2"].numpy() for b in batches]))
    q = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    k = key / np.linalg.norm(key, axis=1, keepdims=True)
    logits = q @ k.T / 0.2
    valid = (cases[:, None] != cases[None, :]) | np.eye(8, dtype=bool)
    losses = [np.log(np.exp(row[ok]).sum()) - row[i] for i, (row, ok) in enumerate(zip(logits, valid))]
    top1 = [row[i] > row[ok & (np.arange(8) != i)].max() for i, (row, ok) in enumerate(zip(logits, valid))]
    assert out["loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)
    assert out["top1"] == pytest.approx(float(np.mean(top1)))
    assert out["negatives"] == pytest.approx(float(np.mean(valid.sum(1) - 1)))
    assert out["chance"] == pytest.approx(float(np.mean(1 / valid.sum(1))))


def test_dense_evaluation_runs_the_loss_on_the_first_batches_and_the_rank_on_all():
    net = FakeDense()
    batches = draw_heldout_batches(RandomLoader(voxels=(5, 9, 7, 12)), 6, seed=2)
    out = evaluate_hier(net, batches, CPU, loss_batches=2)
    v = np.array([b["voxels1"].shape[0] for b in batches[:2]], dtype=np.float64)
    bias = float(net.encoder.conv.bias.sum())
    losses = [b["view1"].numpy().mean() + b["view2"].numpy().mean() + bias for b in batches[:2]]
    assert out["loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)
    assert out["negatives"] == pytest.approx(float(np.mean(2 * v - 2)))
    assert len(net.calls) == 2 and out["crops"] == 12
