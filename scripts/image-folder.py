#!/usr/bin/env python3
"""Writes a folder of COUNT generated images for scale runs: CLASSES class folders
of 256x256 JPEGs (`OUT/class_<k>/<i>.jpg`), each a seeded picture whose class shows
in its shapes and colours (noise, a gradient and a few shapes, so no two files are
alike and JPEG has real work). Needs Pillow and numpy (`make bench` puts both in
.venv/):

    .venv/bin/python scripts/image-folder.py OUT COUNT [CLASSES]
"""

import multiprocessing
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

SIDE = 256


def picture(index, classes):
    """The image `index` and its class: shapes of the class's kind and hue on a noisy
    gradient, placed by a generator seeded with `index`."""
    rng = np.random.default_rng(index)
    label = index % classes
    hue = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 31 + 160) % 256])
    ramp = np.linspace(0, 1, SIDE)[None, :, None] * rng.uniform(40, 120, 3)
    noise = rng.normal(0, 18, (SIDE, SIDE, 3))
    base = np.clip(rng.uniform(30, 200, 3) + ramp + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        x, y = rng.integers(0, SIDE - 40, 2)
        w, h = rng.integers(30, 120, 2)
        colour = tuple(int(c) for c in np.clip(hue + rng.normal(0, 25, 3), 0, 255))
        box = [int(x), int(y), int(x + w), int(y + h)]
        shape = label % 3
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.line(box, fill=colour, width=int(rng.integers(4, 14)))
    return label, image


def write(job):
    out, index, classes = job
    label, image = picture(index, classes)
    image.save(os.path.join(out, f"class_{label}", f"{index}.jpg"), quality=90)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    out, count = sys.argv[1], int(sys.argv[2])
    classes = int(sys.argv[3]) if len(sys.argv) == 4 else 10
    for label in range(classes):
        os.makedirs(os.path.join(out, f"class_{label}"), exist_ok=True)
    jobs = ((out, index, classes) for index in range(count))
    with multiprocessing.Pool() as pool:
        for done, _ in enumerate(pool.imap_unordered(write, jobs, chunksize=256), 1):
            if done % 10_000 == 0 or done == count:
                print(f"image-folder: {done} of {count}", flush=True)


if __name__ == "__main__":
    main()
