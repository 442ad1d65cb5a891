"""Writes the fuzz targets' small seed files that are not copied from a pipeline run
(see fuzz/README.md): state dicts in torch.save's two formats (the zip archive and
the legacy one) and as .safetensors, zip
archives laid out as the dataset archives are, .npy and .npz arrays, a small ONNX
model with a head initializer, a PNG.

    .torch/bin/python fuzz/make_seeds.py fuzz/seeds
"""

import collections
import io
import json
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch


def resnet18_state_dict(width):
    """torchvision's resnet18 key names and shapes at base width `width`."""
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()

    def conv(name, cout, cin, k):
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g)

    def bn(name, c):
        sd[f"{name}.weight"] = torch.ones(c)
        sd[f"{name}.bias"] = torch.zeros(c)
        sd[f"{name}.running_mean"] = torch.zeros(c)
        sd[f"{name}.running_var"] = torch.ones(c)
        sd[f"{name}.num_batches_tracked"] = torch.tensor(0)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    cin = width
    for stage in range(1, 5):
        cout = width * 2 ** (stage - 1)
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            conv(f"{prefix}.conv1", cout, cin, 3)
            bn(f"{prefix}.bn1", cout)
            conv(f"{prefix}.conv2", cout, cout, 3)
            bn(f"{prefix}.bn2", cout)
            if block == 0 and stage > 1:
                conv(f"{prefix}.downsample.0", cout, cin, 1)
                bn(f"{prefix}.downsample.1", cout)
            cin = cout
    sd["fc.weight"] = torch.randn(5, cin, generator=g)
    sd["fc.bias"] = torch.zeros(5)
    return sd


def small_state_dict():
    """A few tensors: a transposed (strided) view, an offset into a shared storage."""
    base = torch.arange(12, dtype=torch.float32)
    return collections.OrderedDict(
        [
            ("a", torch.ones(2, 3)),
            ("t", torch.arange(6, dtype=torch.float32).reshape(2, 3).t()),
            ("view", base[4:10]),
            ("count", torch.tensor(3)),
        ]
    )


def safetensors_bytes(sd):
    header, data = {}, b""
    for name, t in sd.items():
        if t.dtype != torch.float32:
            continue
        raw = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def png():
    """A 2x2 RGBA PNG, as the archives hold 300x300 ones."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (2, 2), (10, 200, 30, 255)).save(out, "PNG")
    return out.getvalue()


def dataset_zip(top, stored):
    out = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w", method) as z:
        z.writestr(f"{top}/", b"")
        for cls in ("paper", "rock"):
            z.writestr(f"{top}/{cls}/{cls}01.png", png())
        z.writestr(f"__MACOSX/{top}/._x.png", b"junk")
    return out.getvalue()


def npz_bytes(**arrays):
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def npy_bytes(array):
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def model_with_head():
    """A graph with an `fc.weight` initializer (raw float data, as model.onnx holds
    it) and a metadata entry."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "fc.weight")
    node = helper.make_node("Gemm", ["x", "fc.weight"], ["logits"], transB=1)
    graph = helper.make_graph(
        [node],
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [weight],
    )
    model = helper.make_model(graph)
    helper.set_model_props(model, {"classes": "paper,rock,scissors"})
    return model.SerializeToString()


def main(root):
    root = Path(root)
    files = {}
    for name, sd in [("small", small_state_dict()), ("resnet18_w1", resnet18_state_dict(1))]:
        out = io.BytesIO()
        torch.save(sd, out)
        files[f"pth/{name}.pth"] = out.getvalue()
        legacy = io.BytesIO()
        torch.save(sd, legacy, _use_new_zipfile_serialization=False)
        files[f"pth/{name}_legacy.pth"] = legacy.getvalue()
        files[f"safetensors/{name}.safetensors"] = safetensors_bytes(sd)
    files["onnx/head_with_initializer.onnx"] = model_with_head()
    files["unpack/rps.zip"] = dataset_zip("rps", stored=False)
    files["unpack/rps-test-set.zip"] = dataset_zip("rps-test-set", stored=True)
    files["npy/f32.npy"] = npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3))
    files["npy/i64.npy"] = npy_bytes(np.array([0, 1, 2, 1], dtype=np.int64))
    files["npy/u8.npy"] = npy_bytes(np.zeros((1, 3, 2, 2), dtype=np.uint8))
    files["npy/f16.npy"] = npy_bytes(np.arange(6, dtype=np.float16).reshape(2, 3))
    files["npy/fortran.npy"] = npy_bytes(np.asfortranarray(np.ones((2, 3), dtype=np.float32)))
    files["npy/tensors.npz"] = npz_bytes(**{"conv1.weight": np.ones((1, 3, 1, 1), np.float32), "fc.bias": np.zeros(2, np.float32)})
    files["image/rgba.png"] = png()
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1])
