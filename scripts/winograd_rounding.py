"""How far each way of computing a 3x3 convolution rounds from float64, in float32.

    .torch/bin/python scripts/winograd_rounding.py

One convolution the size of ResNet18's layer4 (512 channels in and out, 7x7 maps,
8 images, ReLU'd normal inputs, He-initialized weights): PyTorch's own float32
convolution three ways (default, channels_last, one thread), the patch product the
train step's large maps use, and Winograd F(2x2,3x3) and F(4x4,3x3) as the graphs
compute them (gathered tiles, Lavin's matrices, the kernel transformed in float64
and rounded once). Prints each one's relative L2 error and largest error against
the float64 convolution. docs/numerics.md quotes it: F(2x2) rounds as a direct
product does (within PyTorch's own channels_last error), F(4x4) about ten times more.
"""
import numpy as np
import torch

CHANNELS, SIZE, IMAGES = 512, 7, 8

BT2 = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float)
G2 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], float)
AT2 = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)
BT4 = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    float,
)
G4 = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    float,
)
AT4 = np.array(
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], float
)


def patches(x, w):
    """The patch matrix `[C*9, N*P]` times the weight `[K, C*9]`, in float32."""
    n, c, s, _ = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    taps = np.stack([padded[:, :, i : i + s, j : j + s] for i in range(3) for j in range(3)], 2)
    matrix = taps.transpose(1, 2, 0, 3, 4).reshape(c * 9, -1)
    y = w.reshape(w.shape[0], -1) @ matrix
    return y.reshape(-1, n, s, s).transpose(1, 0, 2, 3)


def winograd(x, w, bt, g, at):
    """F(m x m, 3x3) on gathered tiles in float32, the kernel transformed in float64."""
    n, c, s, _ = x.shape
    m = at.shape[0]
    alpha = m + 2
    tiles = -(-s // m)
    padded = np.zeros((n, c, tiles * m + 2, tiles * m + 2), np.float32)
    padded[:, :, 1 : s + 1, 1 : s + 1] = x
    d = np.stack(
        [
            np.stack([padded[:, :, i * m : i * m + alpha, j * m : j * m + alpha] for j in range(tiles)], 2)
            for i in range(tiles)
        ],
        2,
    )
    bt32, at32 = bt.astype(np.float32), at.astype(np.float32)
    v = np.einsum("pa,nctuab,qb->pqctun", bt32, d, bt32).reshape(alpha * alpha, c, -1)
    u = np.einsum("pa,kcab,qb->pqkc", g, w.astype(np.float64), g).astype(np.float32)
    product = (u.reshape(alpha * alpha, -1, c) @ v).reshape(alpha, alpha, -1, tiles, tiles, n)
    y = np.einsum("ip,pqktun,jq->nktiuj", at32, product, at32)
    return y.reshape(n, -1, tiles * m, tiles * m)[:, :, :s, :s]


def main():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((IMAGES, CHANNELS, SIZE, SIZE)), 0).astype(np.float32)
    w = (rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) * np.sqrt(2 / (CHANNELS * 9))).astype(
        np.float32
    )
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    exact = torch.nn.functional.conv2d(xt.double(), wt.double(), padding=1).numpy()

    def conv(x, w):
        return torch.nn.functional.conv2d(x, w, padding=1).contiguous().numpy()

    last = torch.channels_last
    results = [
        ("PyTorch, default", conv(xt, wt)),
        ("PyTorch, channels_last", conv(xt.to(memory_format=last), wt.to(memory_format=last))),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results.append(("PyTorch, one thread", conv(xt, wt)))
    torch.set_num_threads(threads)
    results += [
        ("patch product", patches(x, w)),
        ("Winograd F(2x2,3x3)", winograd(x, w, BT2, G2, AT2)),
        ("Winograd F(4x4,3x3)", winograd(x, w, BT4, G4, AT4)),
    ]
    for name, y in results:
        error = y.astype(np.float64) - exact
        relative = np.linalg.norm(error) / np.linalg.norm(exact)
        print(f"{name:24s} relative {relative:.2e}  largest {np.abs(error).max():.2e}")


if __name__ == "__main__":
    main()
