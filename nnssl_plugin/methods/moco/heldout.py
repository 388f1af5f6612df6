"""Held-out evaluation of the MoCo family (He et al. 2020, arXiv 1911.05722; Chen et al. 2020, arXiv 2003.04297;
moco_zca: Hassanpour et al., ISBI 2024, arXiv 2402.14611) for the held-out hook (`nnssl_plugin.heldout`): every
held-out query against all M held-out keys (`pair_embeddings`),

    L = −(1/M) Σ_i log( exp(q_i·k_i / τ) / Σ_j exp(q_i·k_j / τ) ),  top-1 = (1/M) Σ_i [q_i·k_i > max_{j≠i} q_i·k_j]

i.e. M − 1 negatives per query (the keys of the other held-out crops), chance 1 / M: the training loss
(`nnssl_plugin.losses.moco`) with the held-out keys as its queue and each query's own key masked; and the effective
rank (RankMe: Garrido et al. 2023, arXiv 2210.02885) of view 1's pooled raw (and whitened) bottleneck.

Shapes: q, k (M, d) unit vectors; pooled bottlenecks (M, c); a batch as `TwoViewDataLoader` returns it.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.heldout import evaluating
from nnssl_plugin.losses.moco import infonce_from_logits, moco_logits, top1_accuracy
from nnssl_plugin.ops.distributed import gather_with_grad
from nnssl_plugin.ops.rank import effective_rank
from nnssl_plugin.precision import autocast


def evaluate_moco(network: nn.Module, batches: Iterable[dict], device: torch.device,
                  loss_batches: int | None = None, precision: str = "amp") -> dict:
    """Held-out InfoNCE and top-1 of a MoCo-family network over all M held-out pairs, and the effective rank of the
    pooled raw (and whitened) bottleneck, from `network.pair_embeddings(view1, view2)` in eval mode without
    gradient; τ = network.config.temperature. Negatives of a query: the keys of the other held-out crops, except
    crops of its own case when the batches carry `case_ids` (as training masks same-case keys of its queue).
    Returns {"loss", "top1", "chance" (mean of 1 / (1 + negatives)), "negatives" (mean per query; M − 1 without
    case ids), "crops" (M), "erank": {"raw bottleneck": ..., ["whitened bottleneck": ...]}}. `loss_batches` is
    accepted for the evaluators' common signature (`Family.heldout`) and not used: every query needs all M keys."""
    if not hasattr(network, "pair_embeddings"):
        raise NnsslError(f"{type(network).__name__} has no pair_embeddings(view1, view2), which the held-out "
                         f"evaluation of the MoCo family needs; update nnssl_plugin or leave out --eval-target")
    parts: dict[str, list[torch.Tensor]] = {"q": [], "k": [], "raw": [], "whitened": [], "case": []}
    with evaluating(network):
        for batch in batches:
            with autocast(device, precision):
                out = network.pair_embeddings(batch["view1"].to(device), batch["view2"].to(device))
            if "case_ids" in batch:
                out["case"] = batch["case_ids"].to(device).double()[:, None]  # (n, 1), gathered like the rest
            for name, values in parts.items():
                if out.get(name) is not None:
                    values.append(out[name].float() if name != "case" else out[name])
    joined = {name: gather_with_grad(torch.cat(values))[0] for name, values in parts.items() if values}
    q, k = joined["q"], joined["k"]  # (M, d) each
    m = q.shape[0]
    usable = ~torch.eye(m, dtype=torch.bool, device=q.device)  # (M, M): every other crop's key is a negative ...
    if "case" in joined:  # ... except the other crops of the query's case (as training masks its queue)
        case = joined["case"][:, 0]  # (M,)
        usable &= case[:, None] != case[None, :]
    # the training loss with the held-out keys as its queue: (M, 1 + M), positive in column 0, own key masked
    logits = moco_logits(q, k, k, network.config.temperature, usable)
    negatives = usable.sum(dim=1).double()  # (M,) valid negatives per query
    erank = {"raw bottleneck": effective_rank(joined["raw"])}
    if "whitened" in joined:
        erank["whitened bottleneck"] = effective_rank(joined["whitened"])
    return {"loss": float(infonce_from_logits(logits)), "top1": top1_accuracy(logits),
            "chance": float((1.0 / (negatives + 1)).mean()), "negatives": float(negatives.mean()), "crops": m,
            "erank": erank}
