"""The phase 2 train step in PyTorch eager mode, for `make bench` to compare with.

    python3 scripts/bench_pytorch.py THREADS STEPS

Times what finetune_step.onnx computes, the recipe's way: torchvision's ResNet18
layer4 (two BasicBlocks, 256 -> 512 channels, BatchNorm in train mode) on layer3
features [64, 256, 14, 14], global average pool, Dropout(0.2), Linear(512, 3), mean
cross-entropy, backward, torch.optim.Adam. Prints `torch VERSION` and
`step IMAGES_PER_SECOND` (the median of STEPS steps after three warm-up steps).
"""
import sys
import time

import torch
from torch import nn

BATCH = 64


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


def main():
    threads, steps = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        BasicBlock(256, 512, 2),
        BasicBlock(512, 512, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(512, 3),
    ).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    features = torch.rand(BATCH, 256, 14, 14)
    labels = torch.arange(BATCH) % 3

    def step():
        optimizer.zero_grad()
        loss_fn(model(features), labels).backward()
        optimizer.step()

    for _ in range(3):
        step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    seconds.sort()
    print(f"torch {torch.__version__}")
    print(f"step {BATCH / seconds[len(seconds) // 2]:.2f}")


if __name__ == "__main__":
    main()
