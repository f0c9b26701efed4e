"""Scoring throughput on this machine: images/s of the CLIP ViT-B/32 and DINO ViT-S/16 encoders at 224 px.

Random-init weights with the real architectures (same FLOPs as the released ones), loaded through the same
loaders as real weights. Timed: the full per-image path of the scorers (PIL preprocessing from a 512 px image +
forward), and the forward alone on preprocessed batches.

    python -m benchmarks.score_speed --images 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .metrics.encoders import CLIPEncoder, DinoEncoder
from .metrics.random_init import save_random_clip, save_random_dino

__all__ = ["measure", "main"]


def _rate(fn, n_images: int, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def measure(n_images: int = 64, batch_size: int = 16, repeats: int = 2, threads: int | None = None) -> dict:
    """images/s for CLIP ViT-B/32, DINO ViT-S/16 and both, end to end and forward only."""
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        save_random_clip(Path(d) / "ViT-B-32.pt", "ViT-B/32")
        clip = CLIPEncoder.from_file(Path(d) / "ViT-B-32.pt")
        save_random_dino(Path(d) / "dino-vits16", "vits16")
        dino = DinoEncoder.from_folder(Path(d) / "dino-vits16")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(n_images)]
    batches = [images[i:i + batch_size] for i in range(0, n_images, batch_size)]
    pv_clip = [clip.pixel_values(b) for b in batches]
    pv_dino = [dino.pixel_values(b) for b in batches]

    def run(encoders):
        for b in batches:
            for e in encoders:
                e.encode_images(b)

    with torch.inference_mode():
        out = {
            "threads": torch.get_num_threads(),
            "images": n_images,
            "batch_size": batch_size,
            "clip_b32_end_to_end": _rate(lambda: run([clip]), n_images, repeats),
            "dino_s16_end_to_end": _rate(lambda: run([dino]), n_images, repeats),
            "clip_plus_dino_end_to_end": _rate(lambda: run([clip, dino]), n_images, repeats),
            "clip_b32_forward": _rate(lambda: [clip.model.encode_image(p) for p in pv_clip], n_images, repeats),
            "dino_s16_forward": _rate(lambda: [dino.model(pixel_values=p) for p in pv_dino], n_images, repeats),
        }
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.images, args.batch_size, args.repeats, args.threads), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
