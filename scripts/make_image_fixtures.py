"""Writes the small images and the Pillow results the image transform tests compare
against (crates/rps-image/tests/fixtures/). Run once; the outputs are committed.

    python3 scripts/make_image_fixtures.py crates/rps-image/tests/fixtures
"""
import os
import sys

import numpy as np
from PIL import Image

SIZE = 16


def main(out):
    rng = np.random.default_rng(0)
    os.makedirs(out, exist_ok=True)
    smooth = np.stack(np.meshgrid(np.linspace(0, 1, 37), np.linspace(0, 1, 29)), -1)
    base = (255 * np.concatenate([smooth, smooth[..., :1] * smooth[..., 1:]], -1)).astype(np.uint8)
    noisy = np.clip(base.astype(int) + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    alpha = rng.integers(0, 256, base.shape[:2], dtype=np.uint8)
    images = {
        "rgba.png": Image.fromarray(np.dstack([noisy, alpha])),
        "gray16.png": Image.fromarray(noisy[..., 0].astype(np.uint16) * 257),
        "palette.png": Image.fromarray(noisy).quantize(16),
        "photo.jpg": Image.fromarray(noisy),
        "large.png": Image.fromarray(np.kron(noisy, np.ones((9, 9, 1), np.uint8))),
    }
    for name, img in images.items():
        path = os.path.join(out, name)
        img.save(path, quality=95) if name.endswith(".jpg") else img.save(path)
        # What torchvision's test transform sees: PIL convert('RGB'), Resize((S,S)).
        # Except 16-bit: PIL clips it to 255 on convert('RGB'); the project scales
        # 16 bits to 8 (the image crate's conversion), so compare against that.
        img = Image.open(path)
        if img.mode == "I;16":
            img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
        rgb = img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        np.save(os.path.join(out, name.rsplit(".", 1)[0] + "_expected.npy"), np.asarray(rgb))


if __name__ == "__main__":
    main(sys.argv[1])
