"""The recipe in PyTorch, for `make bench` to compare with. Three measurements:

    python3 scripts/bench_pytorch.py step ARCH THREADS STEPS [UNFREEZE]
    python3 scripts/bench_pytorch.py forward ARCH THREADS IMAGES EXPORT.onnx
    python3 scripts/bench_pytorch.py pipeline ARCH THREADS ARCHIVES WEIGHTS WORK VIEWS HEAD_EPOCHS FT_EPOCHS [FT_LR [FT_BN]]

ARCH is resnet18, resnet34, resnet50, mobilenet_v2 or efficientnet_lite0 (`torch_nets.py`
defines them with their published weights' names).
- step: the phase 2 train step in eager mode, what finetune_step.onnx computes: the
  network's stages from UNFREEZE (last, the default: layer4 for the ResNets; all; or
  a stage by name; BatchNorm in train mode) on the frozen layers' output
  (normalized images for all), global average pool, Dropout(0.2), Linear(features,
  3), mean cross-entropy, backward, torch.optim.Adam. Prints `step IMAGES_PER_SECOND`
  (the median of STEPS steps after three warm-ups).
- forward: the frozen backbone as extract runs it (eval mode, batch 32, the frozen
  stages' output and the pooled features out) over IMAGES images; prints `forward IMAGES_PER_SECOND`,
  then writes the same module with torch.onnx (opset 17, dynamic batch) to
  EXPORT.onnx for ONNX Runtime to be timed on (`export failed: WHY` if it cannot).
- pipeline: the whole recipe with the same caching idea as `make all`, from the two
  zip archives in ARCHIVES: unzip, preprocess every view with Pillow into a uint8
  cache on disk, extract the frozen stages' output and pooled features to disk, train
  the head then the last stage + head at FT_LR (default 1e-7, the recipe) with its
  BatchNorm in FT_BN mode (train, the recipe, or eval), testing after every epoch
  (`epoch N PHASE test_loss L test_acc A`), write the test predictions. WEIGHTS is a
  state dict (.pth) or `random`. Prints each stage's seconds and `seconds TOTAL`.

Every mode prints `torch VERSION` first. torchvision is not needed.
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
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_nets  # noqa: E402

BATCH = 64
EXTRACT_BATCH = 32
IMAGE_SIZE = 224


class Backbone(nn.Module):
    """images -> (the frozen stages' output, pooled), as backbone.onnx."""

    def __init__(self, net, first):
        super().__init__()
        stages = net.stages()
        self.frozen = nn.Sequential(*stages[:first])
        self.trained = nn.Sequential(*stages[first:])

    def forward(self, images):
        frozen = self.frozen(images)
        return frozen, torch.flatten(F.adaptive_avg_pool2d(self.trained(frozen), 1), 1)


class Finetune(nn.Module):
    """The frozen stages' output -> logits through the stages from `first` and the
    head, as finetune_step.onnx."""

    def __init__(self, net, classes, first):
        super().__init__()
        self.trained = nn.Sequential(*net.stages()[first:])
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(net.pooled_channels, classes))

    def forward(self, frozen):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.trained(frozen), 1), 1))


def frozen_shape(net, first):
    """The per-image input of the step from stage `first` at 224 pixels."""
    with torch.inference_mode():
        x = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
        for stage in net.stages()[:first]:
            x = stage.eval()(x)
    return tuple(x.shape[1:])


def normalizer(net):
    """The network's mean and std as `[1, 3, 1, 1]` tensors."""
    return [torch.tensor(v).view(1, 3, 1, 1) for v in (net.mean, net.std)]


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
    net = torch_nets.build(arch)
    first = torch_nets.first_stage(net, unfreeze)
    model = Finetune(net, 3, first).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    features = torch.rand(BATCH, *frozen_shape(net, first))
    labels = torch.arange(BATCH) % 3

    def one():
        optimizer.zero_grad()
        loss_fn(model(features), labels).backward()
        optimizer.step()

    for _ in range(3):
        one()
    print(f"step {median_rate(BATCH, steps, one):.2f}")
    print(f"peak_resident_bytes {peak_resident_bytes()}")


def peak_resident_bytes():
    """This process's peak resident memory: VmHWM, its own since exec. (getrusage's
    ru_maxrss also counts the parent's peak when spawned by vfork, as Rust spawns.)"""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM")


def forward(arch, images, export_path):
    torch.manual_seed(0)
    net = torch_nets.build(arch)
    backbone = Backbone(net, torch_nets.first_stage(net, "last")).eval()
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
            output_names=["frozen", "pooled"],
            dynamic_axes={"images": {0: "N"}, "frozen": {0: "N"}, "pooled": {0: "N"}},
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


def extract(net, first, cache_path, work, split):
    cache = np.load(cache_path, mmap_mode="r")
    n = len(cache)
    backbone = Backbone(net, first).eval()
    frozen = np.lib.format.open_memmap(
        os.path.join(work, f"{split}_frozen.npy"), "w+", np.float32, (n, *frozen_shape(net, first))
    )
    pooled = np.lib.format.open_memmap(
        os.path.join(work, f"{split}_pooled.npy"), "w+", np.float32, (n, net.pooled_channels)
    )
    mean, std = normalizer(net)
    with torch.inference_mode():
        for start in range(0, n, EXTRACT_BATCH):
            batch = torch.from_numpy(np.array(cache[start : start + EXTRACT_BATCH]))
            images = (batch.float() / 255.0 - mean) / std
            f, p = backbone(images)
            frozen[start : start + len(batch)] = f.numpy()
            pooled[start : start + len(batch)] = p.numpy()
    frozen.flush()
    pooled.flush()
    return frozen, pooled


def epoch_rows(images, views, epoch, seed):
    order = list(range(images))
    random.Random(seed * 1000 + epoch).shuffle(order)
    view = (epoch - 1) % views
    return [i * views + view for i in order]


def train_epoch(model, optimizer, features, labels, rows, bn_eval=False):
    model.train()
    if bn_eval:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
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


def report_epoch(epoch, phase, logits, labels):
    """One line per epoch: the test loss and accuracy, as epochs.csv holds them."""
    target = torch.from_numpy(labels)
    loss = nn.functional.cross_entropy(logits, target).item()
    accuracy = (logits.argmax(1) == target).float().mean().item()
    print(f"epoch {epoch} {phase} test_loss {loss:.4f} test_acc {accuracy:.4f}")


def pipeline(arch, archives, weights, work, threads, views, head_epochs, ft_epochs, ft_lr, ft_bn):
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
    net = torch_nets.build(arch)
    if weights != "random":
        torch_nets.load(net, weights)
    first = torch_nets.first_stage(net, "last")
    train_frozen, train_pooled = extract(net, first, train_cache, work, "train")
    test_frozen, test_pooled = extract(net, first, test_cache, work, "test")
    times["extract"] = time.perf_counter() - mark

    mark = time.perf_counter()
    torch.manual_seed(0)
    finetune = Finetune(net, len(classes), first)
    head = finetune.head
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4)
    for epoch in range(1, head_epochs + 1):
        rows = epoch_rows(len(train_items), views, epoch, 0)
        train_epoch(head, optimizer, train_pooled, train_labels, rows)
        report_epoch(epoch, "head", test_logits(head, test_pooled), test_labels)
    optimizer = torch.optim.Adam(finetune.parameters(), lr=ft_lr)
    for epoch in range(head_epochs + 1, head_epochs + ft_epochs + 1):
        rows = epoch_rows(len(train_items), views, epoch, 0)
        train_epoch(finetune, optimizer, train_frozen, train_labels, rows, ft_bn == "eval")
        logits = test_logits(finetune, test_frozen)
        report_epoch(epoch, "finetune", logits, test_labels)
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
    try:
        torch_nets.first_stage(torch_nets.build(arch), sys.argv[5] if mode == "step" and len(sys.argv) > 5 else "last")
    except ValueError as error:
        sys.exit(str(error))
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}")
    if mode == "step":
        step(arch, int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "last")
    elif mode == "forward":
        forward(arch, int(sys.argv[4]), sys.argv[5])
    elif mode == "pipeline":
        archives, weights, work = sys.argv[4:7]
        views, head_epochs, ft_epochs = map(int, sys.argv[7:10])
        ft_lr = float(sys.argv[10]) if len(sys.argv) > 10 else 1e-7
        ft_bn = sys.argv[11] if len(sys.argv) > 11 else "train"
        pipeline(arch, archives, weights, work, threads, views, head_epochs, ft_epochs, ft_lr, ft_bn)
    else:
        sys.exit(f"unknown mode {mode}: step, forward or pipeline")


if __name__ == "__main__":
    main()
