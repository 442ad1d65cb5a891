"""The preprocess transforms done by Pillow + numpy, for `make bench` to compare with.

    python3 scripts/bench_pillow.py DIR SIZE WORKERS

Prints `test IMAGES_PER_SECOND` and `train IMAGES_PER_SECOND` for every PNG in DIR:
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


def rate(fn, paths, size, workers):
    with Pool(workers) as pool:
        pool.map(fn, [(paths[0], size)] * workers)  # warm up the workers
        start = time.perf_counter()
        pool.map(fn, [(p, size) for p in paths], chunksize=4)
        return len(paths) / (time.perf_counter() - start)


if __name__ == "__main__":
    folder, size, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    paths = sorted(glob.glob(f"{folder}/*.png"))
    print(f"test {rate(test_view, paths, size, workers):.1f}")
    print(f"train {rate(train_view, paths, size, workers):.1f}")
