"""Writes what torch.load reads from a weights file, compactly, so that tests can hold
rps-weights' reader to it without PyTorch: for every float tensor its shape, the sum
and the sum of absolute values of its elements (in float64), and its elements at
eight flat indices spread over it.

    .torch/bin/python scripts/make_weights_reference.py ../shared/reference/efficientnet-lite0-57934424.pth \
        crates/rps-fixtures/reference/efficientnet_lite0_tensors.json

The file's keys are the state dict's, in its order; integer tensors
(`num_batches_tracked`) are listed under `skipped`.
"""
import json
import sys

import torch


def probes(numel):
    return sorted({(i * numel) // 8 for i in range(8)} | {numel - 1})


def describe(path):
    sd = torch.load(path, map_location="cpu", weights_only=False)
    tensors, skipped = {}, []
    for key, t in sd.items():
        if t.dtype != torch.float32:
            skipped.append(key)
            continue
        flat = t.detach().reshape(-1).double()
        at = probes(flat.numel())
        tensors[key] = {
            "shape": list(t.shape),
            "sum": flat.sum().item(),
            "abs_sum": flat.abs().sum().item(),
            "probes": [[i, flat[i].item()] for i in at],
        }
    return {"tensors": tensors, "skipped": skipped}


if __name__ == "__main__":
    source, out = sys.argv[1], sys.argv[2]
    with open(out, "w") as f:
        json.dump(describe(source), f)
        f.write("\n")
