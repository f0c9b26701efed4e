"""Measure how much ControlNet++'s Canny F1 moves between kornia 0.7.0 (what its requirements.txt pins) and the
kornia installed here (0.9.0), whose non-maximum suppression differs (ties along the gradient, the border).

Method: every image is cut into 512 x 512 tiles; a tile is the "condition image" and 4 noisy copies of it
(Gaussian noise, sigma 4/255, seeds 0-3, 8-bit) stand in for a prompt's 4 generated images. For each kornia version
the condition edges and the copies' edges are ``canny(x, 0.1, 0.2)[1]``; F1 is ControlNet++'s (``BinaryF1Score`` over
the 4 maps together, ``eval/eval_edge.py``). kornia 0.7.0 runs the 4 copies in one batch (as ``eval/eval.py``);
the installed kornia runs :func:`benchmarks.metrics.edges.canny_edges` (one image at a time), i.e. what we score.

    python -m pip download kornia==0.7.0 --no-deps -d /tmp/k07 && (cd /tmp/k07 && unzip -q kornia-0.7.0-*.whl)
    python -m benchmarks.metrics.canny_versions --kornia070 /tmp/k07 IMAGE [IMAGE ...]

Prints per-tile |F1(0.7.0) - F1(installed)| (max, mean) and the edge pixels that differ. Nothing here is used when
scoring; the measured numbers are recorded in ``control/controlnetpp``'s settings and benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_EDGES_070 = r"""
import sys, numpy as np, torch, kornia
assert kornia.__version__ == "0.7.0", kornia.__version__
data = np.load(sys.argv[1])
out = {}
for key in data.files:  # the condition alone, the 4 copies in one batch (eval.py)
    x = torch.from_numpy(data[key]).float() / 255.0          # [5, 3, H, W]
    cond, gens = (kornia.filters.canny(b, 0.1, 0.2)[1].numpy() > 0.5 for b in (x[:1], x[1:]))
    out[key] = np.concatenate([cond, gens])
np.savez_compressed(sys.argv[2], **out)
"""


def tiles(paths: list[str], size: int = 512) -> list[np.ndarray]:
    """Non-overlapping ``size`` tiles ``[H, W, 3]`` uint8 of every image (RGB)."""
    from PIL import Image

    out = []
    for p in paths:
        a = np.asarray(Image.open(p).convert("RGB"))
        for y in range(0, a.shape[0] - size + 1, size):
            for x in range(0, a.shape[1] - size + 1, size):
                out.append(a[y:y + size, x:x + size])
    return out


def noisy_copies(tile: np.ndarray, n: int = 4, sigma: float = 4.0) -> np.ndarray:
    """``n`` 8-bit copies of a tile with Gaussian noise (seeds 0..n-1) -> ``[n, 3, H, W]`` uint8."""
    out = []
    for k in range(n):
        noise = np.random.default_rng(k).normal(0.0, sigma, tile.shape)
        out.append(np.clip(np.rint(tile.astype(np.float64) + noise), 0, 255).astype(np.uint8))
    return np.stack(out).transpose(0, 3, 1, 2)


def f1(pred: np.ndarray, target: np.ndarray) -> float:
    """Binary F1 over all elements (torchmetrics BinaryF1Score; 0 when both are empty)."""
    tp = float(np.sum(pred & target))
    denom = 2 * tp + float(np.sum(pred & ~target)) + float(np.sum(~pred & target))
    return 2 * tp / denom if denom else 0.0


def installed_edges(batch: np.ndarray) -> np.ndarray:
    """:func:`canny_edges` (installed kornia, one image at a time) of ``[N, 3, H, W]`` uint8 -> bool."""
    import torch

    from .edges import canny_edges

    return canny_edges(torch.from_numpy(batch).float() / 255.0).numpy() > 0.5


def measure(paths: list[str], kornia070: str) -> dict[str, float]:
    """F1 differences between kornia 0.7.0 (a subprocess with ``kornia070`` on its path) and the installed one."""
    ts = tiles(paths)
    batches = {f"t{i}": np.concatenate([t.transpose(2, 0, 1)[None], noisy_copies(t)]) for i, t in enumerate(ts)}
    with tempfile.TemporaryDirectory() as d:
        np.savez_compressed(Path(d) / "in.npz", **batches)
        env = {**os.environ, "PYTHONPATH": kornia070}
        subprocess.run([sys.executable, "-c", _EDGES_070, str(Path(d) / "in.npz"), str(Path(d) / "out.npz")],
                       check=True, env=env)
        old = dict(np.load(Path(d) / "out.npz"))
    diffs, pixels = [], []
    for key, batch in batches.items():
        new = installed_edges(batch)  # [5, 1, H, W]: condition, then the 4 copies
        f_old = f1(old[key][1:], np.repeat(old[key][:1], 4, 0))
        f_new = f1(new[1:], np.repeat(new[:1], 4, 0))
        diffs.append(abs(f_old - f_new))
        pixels.append(int(np.sum(old[key] != new)))
    d = np.array(diffs)
    return {"tiles": len(d), "max_abs_f1_diff": float(d.max()), "mean_abs_f1_diff": float(d.mean()),
            "tiles_with_a_difference": int((d > 0).sum()), "max_edge_pixels_differing": int(max(pixels))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kornia070", required=True, help="folder holding an unpacked kornia 0.7.0 wheel")
    ap.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
    for k, v in measure(args.images, args.kornia070).items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
