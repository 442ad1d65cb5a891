"""The preprocess transforms done by Pillow + numpy, for `make bench` to compare with.

    python3 scripts/bench_pillow.py DIR SIZE WORKERS PASSES

Prints `test IMAGES_PER_SECOND` and `train IMAGES_PER_SECOND` for every PNG in DIR,
each the median of PASSES timed passes after an untimed one:
test = convert('RGB'), resize((S,S), BILINEAR), to float CHW normalized;
train = RandomResizedCrop-style crop + resize, flip, rotate(nearest), brightness and
contrast, to float CHW normalized (the same work, with fixed random parameters).
"""
import glob
import random
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image, ImageEnhance

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def to_tensor(img):
    return (np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0 - MEAN) / STD


def test_view(args):
    path, size = args
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return to_tensor(img).shape


def train_view(args):
    path, size = args
    rng = random.Random(path)
    img = Image.open(path).convert("RGB")
    w, h = img.size
    cw, ch = int(w * 0.9), int(h * 0.95)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = img.rotate(rng.uniform(-15, 15), resample=Image.NEAREST)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.9, 1.1))
    return to_tensor(img).shape


def rate(fn, paths, size, workers, passes):
    work = [(p, size) for p in paths]
    with Pool(workers) as pool:
        pool.map(fn, work, chunksize=4)  # warm up the workers and the file cache
        seconds = []
        for _ in range(passes):
            start = time.perf_counter()
            pool.map(fn, work, chunksize=4)
            seconds.append(time.perf_counter() - start)
        return len(paths) / sorted(seconds)[passes // 2]


if __name__ == "__main__":
    folder, size, workers, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    paths = sorted(glob.glob(f"{folder}/*.png"))
    print(f"test {rate(test_view, paths, size, workers, passes):.1f}")
    print(f"train {rate(train_view, paths, size, workers, passes):.1f}")
