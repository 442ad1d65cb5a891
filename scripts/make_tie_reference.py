"""One train step of a width-4 resnet18 trained whole (UNFREEZE=all) on images with
flat regions, computed in float64: where a max-pooling window holds the same
largest value twice, PyTorch routes the gradient to the first, and flat image
regions (the rock-paper-scissors photos' white backgrounds) make such ties common.

    .torch/bin/python scripts/make_tie_reference.py ../shared/reference crates/rps-fixtures/reference/resnet18_w4_ties_train_from_conv1.npz

Reads the model definition from ../shared/reference/make_reference.py and the step
from make_depth_step_reference.py. Writes the keys those references use
(`pixels`, `labels`, `lr`, `init:param:NAME`, `init:buffer:NAME`, `step1:loss`,
`step1:logits`, `step1:grad:NAME`, `step1:buffer:NAME`) and `f32_spread:grad:NAME`,
the worst relative error of PyTorch's own float32 step in two summation orders
(its default and one thread).
"""
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, sys.argv[1])
import make_depth_step_reference as ref  # noqa: E402
from make_reference import ResNet18, randomize_bn  # noqa: E402

BATCH, WIDTH, SIZE = 4, 4, 224
MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(1, 3, 1, 1)


def rel(got, want):
    got, want = got.astype(np.float64), want.astype(np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def step(model, head, x, y, parts):
    params = ref.named(parts, head, "params")
    loss = nn.functional.cross_entropy(ref.forward(parts, head, x), y)
    loss.backward()
    return loss, params


def main():
    target = sys.argv[2]
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    model = ResNet18(WIDTH)
    randomize_bn(model, gen)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=gen, dtype=torch.uint8)
    pixels[:, :, :100, :] = 255  # a white background
    pixels[:, :, 160:, 160:] = 0  # a black corner
    pixels[1] = 128  # one image flat all over
    x32 = (pixels.to(torch.float32) / 255.0 - MEAN) / STD
    y = torch.arange(BATCH) % 3
    head_w = (0.05 * torch.randn(3, model.fc.in_features, generator=gen)).to(torch.float32)
    head_b = (0.05 * torch.randn(3, generator=gen)).to(torch.float32)

    def fresh(dtype):
        m = ResNet18(WIDTH)
        m.load_state_dict(state)
        m = m.to(dtype)
        x = x32.to(dtype)
        parts = ref.trained_part(m, "conv1")
        for _, p in parts:
            p.train()
        head = nn.Linear(m.fc.in_features, 3).to(dtype)
        head.weight.data, head.bias.data = head_w.to(dtype).clone(), head_b.to(dtype).clone()
        return m, head, x, parts

    m, head, x, parts = fresh(torch.float64)
    out = {"pixels": pixels.numpy(), "labels": y.numpy().astype(np.int64), "lr": np.float32(1e-3)}
    for name, p in ref.named(parts, head, "params"):
        out[f"init:param:{name}"] = ref.np32(p)
    for name, b in ref.named(parts, head, "buffers"):
        out[f"init:buffer:{name}"] = ref.np32(b)
    logits = ref.forward(parts, head, x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    out["step1:loss"] = np.float32(loss.item())
    out["step1:logits"] = ref.np32(logits)
    for name, p in ref.named(parts, head, "params"):
        out[f"step1:grad:{name}"] = ref.np32(p.grad)
    for name, b in ref.named(parts, head, "buffers"):
        out[f"step1:buffer:{name}"] = ref.np32(b)
    # channels_last is left out: PyTorch 2.15's float32 backward of this network
    # aborts on it ("double free or corruption").
    for variant in ["default", "one_thread"]:
        torch.set_num_threads(1 if variant == "one_thread" else 2)
        m, head, x, parts = fresh(torch.float32)
        nn.functional.cross_entropy(ref.forward(parts, head, x), y).backward()
        for name, p in ref.named(parts, head, "params"):
            key = f"f32_spread:grad:{name}"
            err = rel(p.grad.numpy(), out[f"step1:grad:{name}"])
            out[key] = np.float64(max(float(out.get(key, 0.0)), err))
    np.savez(target, **out)
    worst = max((v, k) for k, v in out.items() if k.startswith("f32_spread:"))
    print("wrote", target, f"loss {loss.item():.6f}, PyTorch f32 worst {worst[0]:.1e} ({worst[1]})")


if __name__ == "__main__":
    main()
