"""Writes the PyTorch reference values of resnet34 and resnet50 at a small width,
the way ../shared/reference/make_reference.py writes resnet18's, into
crates/rps-fixtures/reference/ (committed, so that tests and CI need no PyTorch).

    python3 scripts/make_arch_reference.py crates/rps-fixtures/reference [--width 4] [--size 64] [--batch 8]

Needs torch only (the networks are defined here with torchvision's names; where
torchvision imports, their full-width state dicts are checked against its models).
For each ARCH in resnet34, resnet50 and TAG = ARCH_w{width}_s{size}_seed0:

- TAG.pth: random weights (BatchNorm statistics and affine drawn too, so eval mode is
  not the identity), 1000-class fc.
- TAG_forward.npz: `input` [batch, 3, size, size], and in eval mode `layer3`,
  `pooled`, `logits`.
- TAG_train_head.npz, TAG_train_layer4.npz: two Adam steps (lr 1e-3, dropout off) of
  the head on `pooled`, then of layer4 + head on `layer3` (BatchNorm in train mode),
  with the keys of ../shared/reference/README.md: `features`, `labels`, `lr`,
  `init:param:NAME`, `init:buffer:NAME`, `stepK:loss`, `stepK:grad:NAME`,
  `stepK:param:NAME`, `stepK:buffer:NAME`, `final:eval_logits`.

Weights and inputs are drawn in float32; every value is computed in float64 and
saved as float32. Deterministic for a given torch version.
"""
import argparse
import copy
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pytorch import ResNet  # noqa: E402 - the one PyTorch definition of the ResNets


def randomize_bn(model, gen):
    """Random-init BatchNorm is the identity in eval mode; make it not."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=gen)
            m.bias.data = 0.1 * torch.randn(c, generator=gen)
            m.running_mean.data = 0.1 * torch.randn(c, generator=gen)
            m.running_var.data = 0.5 + torch.rand(c, generator=gen)


def np32(t):
    return t.detach().cpu().numpy().astype(np.float32)


def forward_ref(model, x):
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        l3 = model.up_to_layer3(x.double())
        pooled = model.pooled(l3)
        logits = model.fc(pooled)
    return {"input": np32(x), "layer3": np32(l3), "pooled": np32(pooled), "logits": np32(logits)}


def buffers_of(modules):
    for prefix, m in modules.items():
        for name, b in m.named_buffers():
            if not name.endswith("num_batches_tracked"):
                yield f"{prefix}.{name}", b


def train_ref(modules, params, inputs, labels, forward, steps=2, lr=1e-3):
    """Adam (torch defaults) on a mean cross-entropy loss, train mode, float64."""
    for m in modules.values():
        m.double().train()
    inputs = inputs.double()
    out = {"labels": labels.numpy().astype(np.int64), "features": np32(inputs), "lr": np.float32(lr)}
    for name, p in params:
        out[f"init:param:{name}"] = np32(p)
    for name, b in buffers_of(modules):
        out[f"init:buffer:{name}"] = np32(b)
    opt = torch.optim.Adam([p for _, p in params], lr=lr)
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(forward(inputs), labels)
        loss.backward()
        out[f"step{step}:loss"] = np.float32(loss.item())
        for name, p in params:
            out[f"step{step}:grad:{name}"] = np32(p.grad)
        opt.step()
        for name, p in params:
            out[f"step{step}:param:{name}"] = np32(p)
        for name, b in buffers_of(modules):
            out[f"step{step}:buffer:{name}"] = np32(b)
    for m in modules.values():
        m.eval()
    with torch.no_grad():
        out["final:eval_logits"] = np32(forward(inputs))
    return out


def check_names_against_torchvision(arch):
    try:
        import torchvision
    except ImportError:
        print(f"{arch}: torchvision not importable, names not checked")
        return
    theirs = getattr(torchvision.models, arch)(weights=None).state_dict()
    ours = ResNet(arch).state_dict()
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.items()}, arch
    print(f"{arch}: every name and shape as torchvision's")


def write(arch, out_dir, width, size, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ResNet(arch, width=width)
    randomize_bn(net, gen)
    tag = f"{arch}_w{width}_s{size}_seed{seed}"
    torch.save(net.state_dict(), os.path.join(out_dir, f"{tag}.pth"))
    x = torch.randn(batch, 3, size, size, generator=gen)
    fwd = forward_ref(net, x)
    np.savez(os.path.join(out_dir, f"{tag}_forward.npz"), **fwd)

    labels = torch.randint(0, 3, (batch,), generator=gen)
    head = nn.Linear(net.features, 3)
    head.weight.data = 0.1 * torch.randn(3, net.features, generator=gen)
    head.bias.data = 0.1 * torch.randn(3, generator=gen)

    h1 = copy.deepcopy(head)
    ref = train_ref({"fc": h1}, [(f"fc.{k}", p) for k, p in h1.named_parameters()],
                    torch.from_numpy(fwd["pooled"]), labels, h1)
    np.savez(os.path.join(out_dir, f"{tag}_train_head.npz"), **ref)

    layer4, h2 = net.layer4, copy.deepcopy(head)
    params = [(f"layer4.{k}", p) for k, p in layer4.named_parameters()]
    params += [(f"fc.{k}", p) for k, p in h2.named_parameters()]

    def phase2(t):
        return h2(torch.flatten(nn.functional.adaptive_avg_pool2d(layer4(t), 1), 1))

    ref = train_ref({"layer4": layer4, "fc": h2}, params, torch.from_numpy(fwd["layer3"]), labels, phase2)
    np.savez(os.path.join(out_dir, f"{tag}_train_layer4.npz"), **ref)
    print(f"wrote {tag}*")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for arch in ["resnet34", "resnet50"]:
        check_names_against_torchvision(arch)
        write(arch, a.out, a.width, a.size, a.batch, a.seed)


if __name__ == "__main__":
    main()
