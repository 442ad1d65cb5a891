"""One phase 2 step with the trained stages' BatchNorm in eval mode (`FT_BN=eval`,
Keras' `training=False`), computed in float64, with PyTorch's own float32 spread.

    .torch/bin/python scripts/make_bn_eval_reference.py ../shared/reference crates/rps-fixtures/reference

The step of ../shared/reference/make_depth_step_reference.py (whose functions this
imports), from ../shared/reference/resnet18_w16_seed0.pth (base width 16, 224
pixels: every map has its real size), trained from layer4 (the recipe's depth),
layer2 and conv1 (the whole network, from u8 pixels), batch 8, lr 1e-3, dropout off.
The trained stages run in train mode as the recipe has them, but each of their
BatchNorm layers in eval mode: it normalizes with its running statistics, which stay
as they are, while its weight and bias still learn. Writes
resnet18_w16_seed0_bn_eval_train_from_{stage}.npz with the keys of the depth
references (`features` (left out from conv1), `pixels` (conv1 only), `labels`, `lr`,
`init:param:fc.*`, `step1:loss`, `step1:logits`, `step1:grad:NAME`,
`step1:param:NAME` (from layer4 only, to keep the files small), `step1:buffer:NAME`,
`final:eval_logits`), plus
`f32_spread:KEY`: the worst relative L2 error of three float32 runs of the same step
(PyTorch's default, channels_last, one thread) for each gradient (`grad:NAME`),
parameter after the step (`param:NAME`), `loss`, `logits` and `eval_logits`.
"""
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, sys.argv[1])
import make_depth_step_reference as ref  # noqa: E402

WIDTH, SEED, BATCH, LR = 16, 0, 8, 1e-3
STAGES = ["layer4", "layer2", "conv1"]
VARIANTS = ["default", "channels_last", "one_thread"]


def bn_eval(parts):
    """The trained part in train mode, its BatchNorm layers in eval mode."""
    for _, m in parts:
        m.train()
        for sub in m.modules():
            if isinstance(sub, nn.BatchNorm2d):
                sub.eval()


def step(model, start, head, x, y, lr):
    """One Adam step; the trained part, its parameters, the loss and logits."""
    parts = ref.trained_part(model, start)
    bn_eval(parts)
    params = ref.named(parts, head, "params")
    opt = torch.optim.Adam([p for _, p in params], lr=lr)
    logits = ref.forward(parts, head, x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in params}
    opt.step()
    return parts, params, grads, loss, logits


def rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def spread(pth, start, out, x):
    """The worst float32 error of three summation orders, per key."""
    worst = {}
    y = torch.from_numpy(out["labels"])
    for variant in VARIANTS:
        torch.set_num_threads(1 if variant == "one_thread" else 2)
        model = ref.load("resnet18", pth, WIDTH)
        x32 = x.to(torch.float32)
        if variant == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x32 = x32.contiguous(memory_format=torch.channels_last)
        head = nn.Linear(model.fc.in_features, 3)
        # Copies: the step updates the head in place.
        head.weight.data = torch.from_numpy(out["init:param:fc.weight"]).clone()
        head.bias.data = torch.from_numpy(out["init:param:fc.bias"]).clone()
        parts, params, grads, loss, logits = step(model, start, head, x32, y, LR)
        errs = {"loss": rel(loss.item(), out["step1:loss"]), "logits": rel(logits.detach().numpy(), out["step1:logits"])}
        for name, p in params:
            errs[f"grad:{name}"] = rel(grads[name].numpy(), out[f"step1:grad:{name}"])
            if f"step1:param:{name}" in out:
                errs[f"param:{name}"] = rel(p.detach().numpy(), out[f"step1:param:{name}"])
        for _, m in parts:
            m.eval()
        with torch.no_grad():
            errs["eval_logits"] = rel(ref.forward(parts, head, x32).numpy(), out["final:eval_logits"])
        for key, err in errs.items():
            worst[key] = max(worst.get(key, 0.0), err)
    torch.set_num_threads(2)
    return worst


def make(shared, start):
    torch.use_deterministic_algorithms(True)
    pth = os.path.join(shared, f"resnet18_w{WIDTH}_seed{SEED}.pth")
    gen = torch.Generator().manual_seed(SEED + 300 + STAGES.index(start))
    model = ref.load("resnet18", pth, WIDTH).double()
    feat = model.fc.in_features
    head = nn.Linear(feat, 3).double()
    f32 = lambda t: t.to(torch.float32).to(torch.float64)
    head.weight.data = f32(0.05 * torch.randn(3, feat, generator=gen, dtype=torch.float64))
    head.bias.data = f32(0.05 * torch.randn(3, generator=gen, dtype=torch.float64))
    shape = ref.input_shape(model, start, BATCH)
    out = {"lr": np.float32(LR), "init:param:fc.weight": ref.np32(head.weight), "init:param:fc.bias": ref.np32(head.bias)}
    if start == "conv1":
        pixels = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
        mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(1, 3, 1, 1)
        x = ((pixels.to(torch.float32) / 255.0 - mean) / std).to(torch.float64)
        out["pixels"] = pixels.numpy()
    else:
        x = f32(torch.relu(torch.randn(*shape, generator=gen, dtype=torch.float64)))
        out["features"] = ref.np32(x)
    y = torch.randint(0, 3, (BATCH,), generator=gen)
    out["labels"] = y.numpy().astype(np.int64)
    parts, params, grads, loss, logits = step(model, start, head, x, y, LR)
    out["step1:loss"] = np.float32(loss.item())
    out["step1:logits"] = ref.np32(logits)
    for name, p in params:
        out[f"step1:grad:{name}"] = ref.np32(grads[name])
        if start == STAGES[0]:
            out[f"step1:param:{name}"] = ref.np32(p)
    for name, b in ref.named(parts, head, "buffers"):
        out[f"step1:buffer:{name}"] = ref.np32(b)
    for _, m in parts:
        m.eval()
    with torch.no_grad():
        out["final:eval_logits"] = ref.np32(ref.forward(parts, head, x))
    for key, err in spread(pth, start, out, x).items():
        out[f"f32_spread:{key}"] = np.float64(err)
    return out, loss.item(), len(params)


def main():
    shared, target = sys.argv[1], sys.argv[2]
    for start in STAGES:
        out, loss, count = make(shared, start)
        path = os.path.join(target, f"resnet18_w{WIDTH}_seed{SEED}_bn_eval_train_from_{start}.npz")
        np.savez(path, **out)
        worst = max((v, k) for k, v in out.items() if k.startswith("f32_spread:grad:"))
        print("wrote", path, f"loss {loss:.6f}, {count} parameters,", f"PyTorch f32 worst gradient {worst[0]:.1e} ({worst[1][16:]})")


if __name__ == "__main__":
    main()
