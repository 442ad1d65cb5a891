"""Train steps of MobileNetV2 and EfficientNet-Lite0 from three depths, and their
eval-mode ImageNet forward, computed in float64 with PyTorch's own float32 spread.

    .torch/bin/python scripts/make_mobile_reference.py ../shared/reference crates/rps-fixtures/reference

mobilenet_v2: torchvision's `mobilenet_v2(width_mult=0.25, num_classes=10)` (224
pixels, so every map has its real size while the file stays small), seeded
random-init with random BatchNorm statistics, saved as
mobilenet_v2_w8_seed0.pth (the pipeline's WIDTH=8). efficientnet_lite0: the genuine
../shared/reference/efficientnet-lite0-57934424.pth in the network `torch_nets.py`
writes out as the file's own package defines it (EfficientNet-PyTorch's names, no
squeeze-excitation, ReLU6, TensorFlow's 'SAME' padding, BatchNorm eps 1e-3 and
momentum 0.01). `torch_nets.MobileNetV2` computes the step, checked here to give
torchvision's outputs on the same weights.

For each network and each depth (its last stage, the recipe's default; a deeper
one; the whole network from u8 pixels) one phase 2 step, batch 8, lr 1e-3, dropout
off, every trained BatchNorm in train mode: NET_train_from_STAGE.npz with the keys
of the depth references (`features` (the frozen part's output, here random
normals: these networks hand over linear projections, not ReLU outputs) or
`pixels`, `labels`, `lr`, `init:param:HEAD.*`, `step1:loss`, `step1:logits`,
`step1:grad:NAME`, `step1:param:NAME` (at the default depth), `step1:buffer:NAME`,
`final:eval_logits`, and `f32_spread:KEY`, the worst relative L2 error of three
float32 runs (PyTorch's default, channels_last, one thread)). The whole-network file
also holds `imagenet:images` (the pixels normalized in float32 with the network's
mean and std) and `imagenet:logits`, the untouched network's eval-mode logits with
its own classifier.

Lite0's trained stages hold millions of values, so its files keep at most
`keep_at_most` (2048) values of each gradient, parameter and statistic: a larger
tensor is stored flat as its elements at 0, step, 2 step, ... with step =
ceil(size / 2048) (its float32 spread is measured on the whole tensor).
"""
import math
import os
import sys

import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_nets  # noqa: E402

SEED, BATCH, LR = 0, 8, 1e-3
KEEP = 2048
VARIANTS = ["default", "channels_last", "one_thread"]


def np32(t):
    return t.detach().to(torch.float32).numpy().copy()


def rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def load_lite0(shared):
    model = torch_nets.EfficientNetLite0()
    torch_nets.load(model, os.path.join(shared, "efficientnet-lite0-57934424.pth"))
    return model


def make_mobilenet(target):
    path = os.path.join(target, f"mobilenet_v2_w8_seed{SEED}.pth")
    if not os.path.exists(path):
        torch.manual_seed(SEED)
        model = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10)
        gen = torch.Generator().manual_seed(SEED + 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.data = 1 + 0.2 * torch.randn(c, generator=gen)
                m.bias.data = 0.2 * torch.randn(c, generator=gen)
                m.running_mean.data = 0.2 * torch.randn(c, generator=gen)
                m.running_var.data = 0.5 + torch.rand(c, generator=gen)
        torch.save(model.state_dict(), path)
    model = torch_nets.MobileNetV2(classes=10, width_mult=0.25)
    torch_nets.load(model, path)
    theirs = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10).eval()
    theirs.load_state_dict(torch.load(path))
    probe = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        assert torch.equal(model.eval()(probe), theirs(probe)), "torch_nets.MobileNetV2 is torchvision's"
    return model


NETS = {
    "mobilenet_v2": dict(
        tag=f"mobilenet_v2_w8_seed{SEED}", load=lambda shared, target: make_mobilenet(target),
        head="classifier.1", stages=["features.14", "features.7", "all"]),
    "efficientnet_lite0": dict(
        tag="efficientnet_lite0", load=lambda shared, target: load_lite0(shared),
        head="_fc", stages=["_blocks.11", "_blocks.5", "all"], sampled=True),
}


def sampled(out):
    """Each gradient, parameter and statistic cut to at most KEEP values."""
    kept = {"keep_at_most": np.int64(KEEP)}
    for key, value in out.items():
        if key.startswith("step1:") and key != "step1:logits" and value.size > KEEP:
            value = value.reshape(-1)[:: math.ceil(value.size / KEEP)].copy()
        kept[key] = value
    return kept


def trained(model, start):
    """The frozen stages and the trained ones, each a list of modules."""
    stages = model.stages()
    first = torch_nets.first_stage(model, start)
    return stages[:first], stages[first:]


def forward(stages, head, x):
    for stage in stages:
        x = stage(x)
    return head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def named(model, stages, head_name, head, what):
    """The trained stages' parameters or buffers by their names in `model`, then the
    new head's parameters."""
    pick = (lambda m: m.parameters()) if what == "params" else (lambda m: m.buffers())
    ids = {id(t) for stage in stages for t in pick(stage)}
    items = model.named_parameters() if what == "params" else model.named_buffers()
    out = [(k, t) for k, t in items if id(t) in ids and not k.endswith("num_batches_tracked")]
    if what == "params":
        out += [(f"{head_name}.weight", head.weight), (f"{head_name}.bias", head.bias)]
    return out


def step(net, model, start, head, x, y):
    frozen, parts = trained(model, start)
    for m in parts:
        m.train()
    params = named(model, parts, net["head"], head, "params")
    opt = torch.optim.Adam([p for _, p in params], lr=LR)
    logits = forward(parts, head, x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in params}
    opt.step()
    return parts, params, grads, loss, logits


def new_head(out, net, features, dtype):
    head = nn.Linear(features, 3).to(dtype)
    head.weight.data = torch.from_numpy(out[f"init:param:{net['head']}.weight"]).to(dtype).clone()
    head.bias.data = torch.from_numpy(out[f"init:param:{net['head']}.bias"]).to(dtype).clone()
    return head


def spread(net, shared, target, start, out, x):
    worst = {}
    y = torch.from_numpy(out["labels"])
    for variant in VARIANTS:
        torch.set_num_threads(1 if variant == "one_thread" else 2)
        model = net["load"](shared, target).eval()
        x32 = x.to(torch.float32)
        if variant == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x32 = x32.contiguous(memory_format=torch.channels_last)
        head = new_head(out, net, model.pooled_channels, torch.float32)
        parts, params, grads, loss, logits = step(net, model, start, head, x32, y)
        errs = {"loss": rel(loss.item(), out["step1:loss"]), "logits": rel(logits.detach().numpy(), out["step1:logits"])}
        for name, p in params:
            errs[f"grad:{name}"] = rel(grads[name].numpy(), out[f"step1:grad:{name}"])
            if f"step1:param:{name}" in out:
                errs[f"param:{name}"] = rel(p.detach().numpy(), out[f"step1:param:{name}"])
        for name, b in named(model, parts, net["head"], head, "buffers"):
            errs[f"buffer:{name}"] = rel(b.detach().numpy(), out[f"step1:buffer:{name}"])
        for m in parts:
            m.eval()
        with torch.no_grad():
            errs["eval_logits"] = rel(forward(parts, head, x32).numpy(), out["final:eval_logits"])
        for key, err in errs.items():
            worst[key] = max(worst.get(key, 0.0), err)
    torch.set_num_threads(2)
    return worst


def make(name, shared, target, start):
    torch.use_deterministic_algorithms(True)
    net = NETS[name]
    model = net["load"](shared, target).double().eval()
    first = torch_nets.first_stage(model, start)
    gen = torch.Generator().manual_seed(SEED + 500 + first)
    features = model.pooled_channels
    f32 = lambda t: t.to(torch.float32).to(torch.float64)
    out = {"lr": np.float32(LR)}
    head = nn.Linear(features, 3).double()
    head.weight.data = f32(0.05 * torch.randn(3, features, generator=gen, dtype=torch.float64))
    head.bias.data = f32(0.05 * torch.randn(3, generator=gen, dtype=torch.float64))
    out[f"init:param:{net['head']}.weight"] = np32(head.weight)
    out[f"init:param:{net['head']}.bias"] = np32(head.bias)
    frozen, _ = trained(model, start)
    if start == "all":
        pixels = torch.randint(0, 256, (BATCH, 3, 224, 224), generator=gen, dtype=torch.uint8)
        mean = torch.tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1)
        x = ((pixels.to(torch.float32) / 255.0 - mean) / std).to(torch.float64)
        out["pixels"] = pixels.numpy()
        out["imagenet:images"] = np32(x)
        with torch.no_grad():
            out["imagenet:logits"] = np32(forward(model.stages(), model.head(), x))
    else:
        with torch.no_grad():
            probe = torch.zeros(1, 3, 224, 224, dtype=torch.float64)
            for m in frozen:
                probe = m(probe)
        x = f32(torch.randn(BATCH, *probe.shape[1:], generator=gen, dtype=torch.float64))
        out["features"] = np32(x)
    y = torch.randint(0, 3, (BATCH,), generator=gen)
    out["labels"] = y.numpy().astype(np.int64)
    parts, params, grads, loss, logits = step(net, model, start, head, x, y)
    out["step1:loss"] = np.float32(loss.item())
    out["step1:logits"] = np32(logits)
    for pname, p in params:
        out[f"step1:grad:{pname}"] = np32(grads[pname])
        if start == net["stages"][0]:
            out[f"step1:param:{pname}"] = np32(p)
    for bname, b in named(model, parts, net["head"], head, "buffers"):
        out[f"step1:buffer:{bname}"] = np32(b)
    for m in parts:
        m.eval()
    with torch.no_grad():
        out["final:eval_logits"] = np32(forward(parts, head, x))
    for key, err in spread(net, shared, target, start, out, x).items():
        out[f"f32_spread:{key}"] = np.float64(err)
    return out, loss.item(), len(params)


def main():
    shared, target = sys.argv[1], sys.argv[2]
    for name, net in NETS.items():
        for start in net["stages"]:
            out, loss, count = make(name, shared, target, start)
            path = os.path.join(target, f"{net['tag']}_train_from_{start}.npz")
            np.savez(path, **(sampled(out) if net.get("sampled") else out))
            worst = max((v, k) for k, v in out.items() if k.startswith("f32_spread:grad:"))
            print("wrote", path, f"loss {loss:.6f}, {count} parameters,",
                  f"PyTorch f32 worst gradient {worst[0]:.1e} ({worst[1][16:]})")


if __name__ == "__main__":
    main()
