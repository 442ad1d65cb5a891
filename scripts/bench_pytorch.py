"""The recipe in PyTorch, for `make bench` to compare with. Three measurements:

    python3 scripts/bench_pytorch.py step ARCH THREADS STEPS [UNFREEZE]
    python3 scripts/bench_pytorch.py forward ARCH THREADS IMAGES EXPORT.onnx
    python3 scripts/bench_pytorch.py pipeline ARCH THREADS ARCHIVES WEIGHTS WORK VIEWS HEAD_EPOCHS FT_EPOCHS

ARCH is resnet18, resnet34 or resnet50.
- step: the phase 2 train step in eager mode, what finetune_step.onnx computes:
  torchvision's stages from UNFREEZE (layer4, the default, layer3, layer2, layer1,
  or all: conv1, bn1 and max pooling too; BatchNorm in train mode) on the frozen
  layers' output (normalized images for all), global average pool, Dropout(0.2),
  Linear(features, 3), mean cross-entropy, backward, torch.optim.Adam. Prints
  `step IMAGES_PER_SECOND` (the median of STEPS steps after three warm-ups).
- forward: the frozen backbone as extract runs it (eval mode, batch 32, layer3 and
  the pooled layer4 out) over IMAGES images; prints `forward IMAGES_PER_SECOND`,
  then writes the same module with torch.onnx (opset 17, dynamic batch) to
  EXPORT.onnx for ONNX Runtime to be timed on (`export failed: WHY` if it cannot).
- pipeline: the whole recipe with the same caching idea as `make all`, from the two
  zip archives in ARCHIVES: unzip, preprocess every view with Pillow into a uint8
  cache on disk, extract layer3 and pooled features to disk, train the head then
  layer4 + head (testing after every epoch), write the test predictions. WEIGHTS is
  a state dict (.pth) or `random`. Prints each stage's seconds and `seconds TOTAL`.

Every mode prints `torch VERSION` first. The network is defined here (torchvision's
names, so WEIGHTS loads as a state dict), so torchvision is not needed.
"""
import csv
import os
import random
import sys
import time
import zipfile
from multiprocessing import Pool

import numpy as np
import torch
from torch import nn

BATCH = 64
EXTRACT_BATCH = 32
IMAGE_SIZE = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample(cin, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (the stride on conv2, "v1.5")."""

    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample(cin, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def downsample(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


NETS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNet(nn.Module):
    """torchvision's resnet18, resnet34 or resnet50 with a `classes`-way fc, and a
    base width (64 = torchvision's)."""

    def __init__(self, arch, classes=1000, width=64):
        super().__init__()
        block, blocks = NETS[arch]
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for stage, count in enumerate(blocks, 1):
            planes = width << (stage - 1)
            layers = []
            for i in range(count):
                layers.append(block(cin, planes, 2 if i == 0 and stage > 1 else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.features = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def up_to_layer3(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def pooled(self, layer3):
        return torch.flatten(self.avgpool(self.layer4(layer3)), 1)


class Backbone(nn.Module):
    """images -> (layer3, pooled), as backbone.onnx."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        layer3 = self.net.up_to_layer3(images)
        return layer3, self.net.pooled(layer3)


STAGES = ["all", "layer1", "layer2", "layer3", "layer4"]


class Finetune(nn.Module):
    """The frozen layers' output -> logits through the stages from `unfreeze` and the
    head, as finetune_step.onnx."""

    def __init__(self, net, classes, unfreeze="layer4"):
        super().__init__()
        first = STAGES.index(unfreeze)
        stem = [net.conv1, net.bn1, net.relu, net.maxpool] if first == 0 else []
        layers = [getattr(net, f"layer{k}") for k in range(max(first, 1), 5)]
        self.trained = nn.Sequential(*stem, *layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(net.features, classes))

    def forward(self, frozen):
        return self.head(torch.flatten(self.avgpool(self.trained(frozen)), 1))


def frozen_shape(net, unfreeze):
    """The per-image input of the step from `unfreeze` at 224 pixels."""
    first = STAGES.index(unfreeze)
    if first == 0:
        return (3, IMAGE_SIZE, IMAGE_SIZE)
    if first == 1:
        return (net.conv1.out_channels, 56, 56)
    # layer1 keeps the stem's 56x56; each later stage halves it.
    size = 56 >> (first - 2)
    return (getattr(net, f"layer{first}")[0].conv1.in_channels, size, size)


def median_rate(images, runs, fn):
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    seconds.sort()
    return images / seconds[len(seconds) // 2]


def step(arch, steps, unfreeze):
    torch.manual_seed(0)
    net = ResNet(arch)
    model = Finetune(net, 3, unfreeze).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    features = torch.rand(BATCH, *frozen_shape(net, unfreeze))
    labels = torch.arange(BATCH) % 3

    def one():
        optimizer.zero_grad()
        loss_fn(model(features), labels).backward()
        optimizer.step()

    for _ in range(3):
        one()
    print(f"step {median_rate(BATCH, steps, one):.2f}")


def forward(arch, images, export_path):
    torch.manual_seed(0)
    backbone = Backbone(ResNet(arch)).eval()
    batch = torch.rand(EXTRACT_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    runs = max(1, images // EXTRACT_BATCH)
    with torch.inference_mode():
        backbone(batch)
        print(f"forward {median_rate(EXTRACT_BATCH, runs, lambda: backbone(batch)):.2f}")
    try:
        torch.onnx.export(
            backbone,
            (batch,),
            export_path,
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["layer3", "pooled"],
            dynamic_axes={"images": {0: "N"}, "layer3": {0: "N"}, "pooled": {0: "N"}},
        )
    except Exception as error:  # noqa: BLE001 - the reason is the output
        print(f"export failed: {str(error).splitlines()[0]}")


# ---- The whole recipe ------------------------------------------------------------


def to_u8_chw(img):
    return np.asarray(img.convert("RGB"), np.uint8).transpose(2, 0, 1)


def test_view(path):
    from PIL import Image

    img = Image.open(path).convert("RGB")
    return to_u8_chw(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))


def train_view(args):
    """torchvision's RandomResizedCrop(scale 0.8-1), flip, rotation +-15 and
    ColorJitter(0.1, 0.1), done with Pillow."""
    from PIL import Image, ImageEnhance

    path, view = args
    rng = random.Random(f"{path}:{view}")
    img = Image.open(path).convert("RGB")
    w, h = img.size
    area = w * h * rng.uniform(0.8, 1.0)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = min(w, int(round((area * ratio) ** 0.5)))
    ch = min(h, int(round((area / ratio) ** 0.5)))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    img = img.resize(size, Image.BILINEAR, box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = img.rotate(rng.uniform(-15, 15), resample=Image.NEAREST)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.9, 1.1))
    return to_u8_chw(img)


def unzip(archives, work):
    roots = {}
    for split, name in [("train", "rps.zip"), ("test", "rps-test-set.zip")]:
        out = os.path.join(work, split)
        with zipfile.ZipFile(os.path.join(archives, name)) as archive:
            archive.extractall(out)
        (top,) = [d for d in os.listdir(out) if not d.startswith("__")]
        roots[split] = os.path.join(out, top)
    return roots


def listing(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    items = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        items += [(os.path.join(folder, f), label) for f in sorted(os.listdir(folder))]
    return classes, items


def preprocess(items, views, work, split, threads):
    """uint8 views on disk, view-major within each image as the Rust cache."""
    path = os.path.join(work, f"{split}_cache.npy")
    shape = (len(items) * views, 3, IMAGE_SIZE, IMAGE_SIZE)
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    with Pool(threads) as pool:
        if split == "test":
            pixels = pool.imap(test_view, [p for p, _ in items], chunksize=8)
        else:
            jobs = [(p, v) for p, _ in items for v in range(views)]
            pixels = pool.imap(train_view, jobs, chunksize=8)
        for row, px in enumerate(pixels):
            cache[row] = px
    cache.flush()
    labels = np.repeat(np.array([label for _, label in items]), views)
    return path, labels


def extract(backbone, cache_path, work, split):
    cache = np.load(cache_path, mmap_mode="r")
    n = len(cache)
    channels = backbone.net.layer4[0].conv1.in_channels
    layer3 = np.lib.format.open_memmap(
        os.path.join(work, f"{split}_layer3.npy"), "w+", np.float32, (n, channels, 14, 14)
    )
    pooled = np.lib.format.open_memmap(
        os.path.join(work, f"{split}_pooled.npy"), "w+", np.float32, (n, backbone.net.features)
    )
    with torch.inference_mode():
        for start in range(0, n, EXTRACT_BATCH):
            batch = torch.from_numpy(np.array(cache[start : start + EXTRACT_BATCH]))
            images = (batch.float() / 255.0 - MEAN) / STD
            l3, p = backbone(images)
            layer3[start : start + len(batch)] = l3.numpy()
            pooled[start : start + len(batch)] = p.numpy()
    layer3.flush()
    pooled.flush()
    return layer3, pooled


def epoch_rows(images, views, epoch, seed):
    order = list(range(images))
    random.Random(seed * 1000 + epoch).shuffle(order)
    view = (epoch - 1) % views
    return [i * views + view for i in order]


def train_epoch(model, optimizer, features, labels, rows):
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    for start in range(0, len(rows), BATCH):
        batch = sorted(rows[start : start + BATCH])
        optimizer.zero_grad()
        x = torch.from_numpy(np.asarray(features[batch]))
        loss_fn(model(x), torch.from_numpy(labels[batch])).backward()
        optimizer.step()


def test_logits(model, features):
    model.eval()
    with torch.inference_mode():
        return torch.cat(
            [model(torch.from_numpy(np.asarray(features[s : s + BATCH]))) for s in range(0, len(features), BATCH)]
        )


def pipeline(arch, archives, weights, work, threads, views, head_epochs, ft_epochs):
    times = {}
    start = time.perf_counter()
    roots = unzip(archives, work)
    classes, train_items = listing(roots["train"])
    _, test_items = listing(roots["test"])
    times["unzip"] = time.perf_counter() - start

    mark = time.perf_counter()
    train_cache, train_labels = preprocess(train_items, views, work, "train", threads)
    test_cache, test_labels = preprocess(test_items, 1, work, "test", threads)
    times["preprocess"] = time.perf_counter() - mark

    mark = time.perf_counter()
    torch.manual_seed(0)
    net = ResNet(arch)
    if weights != "random":
        net.load_state_dict(torch.load(weights, map_location="cpu"))
    backbone = Backbone(net).eval()
    train_l3, train_pooled = extract(backbone, train_cache, work, "train")
    test_l3, test_pooled = extract(backbone, test_cache, work, "test")
    times["extract"] = time.perf_counter() - mark

    mark = time.perf_counter()
    torch.manual_seed(0)
    finetune = Finetune(net, len(classes))
    head = finetune.head
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4)
    for epoch in range(1, head_epochs + 1):
        rows = epoch_rows(len(train_items), views, epoch, 0)
        train_epoch(head, optimizer, train_pooled, train_labels, rows)
        test_logits(head, test_pooled)
    optimizer = torch.optim.Adam(finetune.parameters(), lr=1e-7)
    for epoch in range(head_epochs + 1, head_epochs + ft_epochs + 1):
        rows = epoch_rows(len(train_items), views, epoch, 0)
        train_epoch(finetune, optimizer, train_l3, train_labels, rows)
        logits = test_logits(finetune, test_l3)
    times["train"] = time.perf_counter() - mark

    mark = time.perf_counter()
    with open(os.path.join(work, "predictions.csv"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "predicted"] + classes)
        probs = torch.softmax(logits, 1).numpy()
        for (path, label), p in zip(test_items, probs):
            out.writerow([path, classes[label], classes[int(p.argmax())]] + list(p))
    times["evaluate"] = time.perf_counter() - mark
    for name, seconds in times.items():
        print(f"{name} {seconds:.1f}")
    print(f"seconds {time.perf_counter() - start:.1f}")


def main():
    mode, arch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if arch not in NETS:
        sys.exit(f"unknown ARCH {arch}: {', '.join(NETS)}")
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}")
    if mode == "step":
        unfreeze = sys.argv[5] if len(sys.argv) > 5 else "layer4"
        if unfreeze not in STAGES:
            sys.exit(f"unknown UNFREEZE {unfreeze}: {', '.join(STAGES)}")
        step(arch, int(sys.argv[4]), unfreeze)
    elif mode == "forward":
        forward(arch, int(sys.argv[4]), sys.argv[5])
    elif mode == "pipeline":
        archives, weights, work = sys.argv[4:7]
        views, head_epochs, ft_epochs = map(int, sys.argv[7:10])
        pipeline(arch, archives, weights, work, threads, views, head_epochs, ft_epochs)
    else:
        sys.exit(f"unknown mode {mode}: step, forward or pipeline")


if __name__ == "__main__":
    main()
