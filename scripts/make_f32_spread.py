"""PyTorch's own float32 error on the depth references, over several summation orders.

    .torch/bin/python scripts/make_f32_spread.py ../shared/reference crates/rps-fixtures/reference/f32_spread.json

`make_depth_step_reference.py` records one float32 run's gradient error per parameter
(`torch_f32_rel:NAME`). That run is one draw: a float32 step that sums in another
order flips other ReLUs whose float64 input lies within rounding of zero, and each
flip moves the gradients upstream by about 1e-3. This script reruns the same step in
float32 three ways (PyTorch's default, channels_last, one thread) and writes, per
reference file, the worst relative L2 error of each gradient, each parameter and
running statistic after the Adam step, the loss, the logits and the eval-mode
logits against the float64 reference: the spread any float32 implementation can
land in. The tests bound ours by ten times it.
"""
import json
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, sys.argv[1])
import make_depth_step_reference as ref  # noqa: E402

CASES = [
    ("resnet18_seed0.pth", "resnet18_seed0_train_from_layer3.npz", "layer3", 64),
    ("resnet18_w16_seed0.pth", "resnet18_w16_seed0_train_from_layer2.npz", "layer2", 16),
    ("resnet18_w16_seed0.pth", "resnet18_w16_seed0_train_from_conv1.npz", "conv1", 16),
]
VARIANTS = ["default", "channels_last", "one_thread"]


def rel(got, want):
    got, want = got.astype(np.float64), want.astype(np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def run(z, pth, start, width, variant):
    torch.set_num_threads(1 if variant == "one_thread" else 2)
    model = ref.load("resnet18", pth, width)
    x = torch.from_numpy(z["features"])
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    parts = ref.trained_part(model, start)
    for _, m in parts:
        m.train()
    head = nn.Linear(model.fc.in_features, 3)
    head.weight.data = torch.from_numpy(z["init:param:fc.weight"])
    head.bias.data = torch.from_numpy(z["init:param:fc.bias"])
    params = ref.named(parts, head, "params")
    opt = torch.optim.Adam([p for _, p in params], lr=float(z["lr"]))
    logits = ref.forward(parts, head, x)
    loss = nn.functional.cross_entropy(logits, torch.from_numpy(z["labels"]))
    loss.backward()
    opt.step()
    out = {"loss": rel(np.array(loss.item()), z["step1:loss"]), "logits": rel(logits.detach().numpy(), z["step1:logits"])}
    for name, p in params:
        out[f"grad:{name}"] = rel(p.grad.numpy(), z[f"step1:grad:{name}"])
        if f"step1:param:{name}" in z:
            out[f"param:{name}"] = rel(p.detach().numpy(), z[f"step1:param:{name}"])
    for name, b in ref.named(parts, head, "buffers"):
        out[f"buffer:{name}"] = rel(b.numpy(), z[f"step1:buffer:{name}"])
    for _, m in parts:
        m.eval()
    with torch.no_grad():
        out["eval_logits"] = rel(ref.forward(parts, head, x).numpy(), z["final:eval_logits"])
    return out


def main():
    reference, target = sys.argv[1], sys.argv[2]
    spread = {}
    for pth, file, start, width in CASES:
        z = np.load(f"{reference}/{file}")
        worst = {}
        for variant in VARIANTS:
            for key, err in run(z, f"{reference}/{pth}", start, width, variant).items():
                worst[key] = max(worst.get(key, 0.0), err)
        spread[file] = dict(sorted(worst.items()))
        top = max((v, k) for k, v in worst.items() if k.startswith("grad:"))
        print(file, f"worst gradient {top[0]:.1e} ({top[1]})")
    with open(target, "w") as f:
        json.dump({"torch": torch.__version__, "variants": VARIANTS, "files": spread}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
