"""Two Adam steps of the new head (Linear on pooled features, dropout off) under
PyTorch's class-weighted cross-entropy, `CrossEntropyLoss(weight=w)`, computed in
float64: what the head step's loss, gradients and update must match with
CLASS_WEIGHTS set.

    .torch/bin/python scripts/make_weighted_loss_reference.py crates/rps-fixtures/reference/head_weighted_loss.npz

Writes `features` [7, 64], `labels` [7] (every class, one more often), `weights`
[3], `lr`, `init:param:fc.weight`, `init:param:fc.bias`, and per step
`stepK:loss`, `stepK:grad:NAME`, `stepK:param:NAME` (K = 1, 2); and the same
loss without weights as `unweighted:loss`, to show the weights matter. Values are
computed in float64 and stored as float32 (a rounding of 6e-8, far below the
tests' 1e-5).
"""
import sys

import numpy as np
import torch
from torch import nn

BATCH, FEATURES, CLASSES, LR = 7, 64, 3, 1e-2
WEIGHTS = [0.5, 2.0, 1.25]


def main(target):
    torch.manual_seed(0)
    features = torch.randn(BATCH, FEATURES, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 1])
    head = nn.Linear(FEATURES, CLASSES).double()
    params = {"fc.weight": head.weight, "fc.bias": head.bias}
    out = {
        "features": features.float().numpy(),
        "labels": labels.numpy().astype(np.int64),
        "weights": np.array(WEIGHTS, dtype=np.float32),
        "lr": np.float32(LR),
    }
    for name, p in params.items():
        out[f"init:param:{name}"] = p.detach().float().numpy()
    # Start from the float32 values the graph gets.
    with torch.no_grad():
        for p in params.values():
            p.copy_(p.float().double())
    features = features.float().double()
    weighted = nn.CrossEntropyLoss(weight=torch.tensor(WEIGHTS, dtype=torch.float64))
    out["unweighted:loss"] = np.float32(nn.CrossEntropyLoss()(head(features), labels).item())
    opt = torch.optim.Adam(params.values(), lr=LR)
    for step in (1, 2):
        opt.zero_grad()
        loss = weighted(head(features), labels)
        loss.backward()
        out[f"step{step}:loss"] = np.float32(loss.item())
        for name, p in params.items():
            out[f"step{step}:grad:{name}"] = p.grad.float().numpy()
        opt.step()
        for name, p in params.items():
            out[f"step{step}:param:{name}"] = p.detach().float().numpy()
    np.savez(target, **out)


if __name__ == "__main__":
    main(sys.argv[1])
