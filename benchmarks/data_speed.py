"""Data speed: Shapes-5 generation at 64 px, and shard loading (decode to tensors) at 512 px, per worker.

    python -m benchmarks.data_speed            # human-readable
    python -m benchmarks.data_speed --json     # one JSON object

Targets (DESIGN.md section 4): >= 1,000 Shapes-5 samples/s per core at 64 px; the loader >= 100 samples/s per
worker at 512 x 512 from local shards. Rates are measured on CPU time of this process (one core), so other load on
the machine does not lower them much; wall-clock rates are printed too. The loader is run in-process
(num_workers=0): one process = one DataLoader worker. ``--workers N`` adds a wall-clock run with N workers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

from lit_cologen.data.schema import TASKS


def _timed(fn) -> tuple[float, float, Any]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def generation_speed(n_per_task: int, resolution: int) -> dict[str, Any]:
    """Shapes-5 samples/s (make_sample, PIL images out, no PNG encoding), per task and for the uniform mixture."""
    from lit_cologen.data.shapes import iter_shapes5, make_sample

    for t in TASKS:  # warm the render caches
        make_sample(t, 10**7, resolution=resolution)
    per_task = {}
    for t in TASKS:
        wall, cpu, _ = _timed(lambda t=t: [make_sample(t, i, resolution=resolution) for i in range(n_per_task)])
        per_task[t] = round(n_per_task / cpu, 1)
    n = n_per_task * len(TASKS)
    wall, cpu, _ = _timed(lambda: sum(1 for _ in iter_shapes5(resolution=resolution, start=10**6, stop=10**6 + n)))
    return {"resolution": resolution, "samples": n, "per_task_cpu": per_task,
            "mixture_cpu": round(n / cpu, 1), "mixture_wall": round(n / wall, 1)}  # fmt: skip


def loader_speed(shard_dir: str, resolution: int, batches: int, batch_size: int, workers: int) -> dict[str, Any]:
    """Samples/s of the training loader (resampled shards -> decode -> resize/crop -> float tensors)."""
    import torch

    from lit_cologen.data.config import DataConfig
    from lit_cologen.data.datamodule import CoLoGenDataModule

    torch.set_num_threads(1)  # as in a DataLoader worker (torch sets 1 thread there)
    cfg = DataConfig(source="shards", train_shards=[shard_dir], resolution=resolution, batch_size=batch_size,
                     num_workers=workers, samples_per_epoch=batches * batch_size, shuffle_buffer=64)  # fmt: skip
    dm = CoLoGenDataModule(cfg)
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up and shuffle-buffer fill are not timed
    wall, cpu, n = _timed(lambda: sum(len(b["key"]) for b in it))
    out = {"workers": workers, "samples": n, "wall_per_s": round(n / wall, 1)}
    if workers == 0:
        out["cpu_per_s"] = round(n / cpu, 1)
    assert dm.skipped["total"] == 0, dm.skipped
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--resolution", type=int, default=512, help="shard resolution for the loader (default 512)")
    parser.add_argument("--n-per-task", type=int, default=40, help="samples per task written to shards (default 40)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches (default 40)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gen-per-task", type=int, default=600, help="generated samples per task at 64 px")
    parser.add_argument("--workers", type=int, default=0, help="also time a DataLoader with this many workers")
    parser.add_argument("--dir", default=None, help="write shards here instead of a temporary folder")
    args = parser.parse_args(argv)

    from lit_cologen.data.shards import write_shapes5_shards

    result: dict[str, Any] = {"benchmark": "data_speed"}
    result["generation_64"] = generation_speed(args.gen_per_task, 64)
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = args.dir or tmp
        wall, cpu, index = _timed(lambda: write_shapes5_shards(shard_dir, args.n_per_task, resolution=args.resolution,
                                                               maxcount=50))
        total = index["totals"]
        result["write"] = {"resolution": args.resolution, "samples": total["samples"], "bytes": total["bytes"],
                           "samples_per_s": round(total["samples"] / wall, 1)}  # fmt: skip
        result["load"] = [loader_speed(shard_dir, args.resolution, args.batches, args.batch_size, 0)]
        if args.workers > 0:
            result["load"].append(loader_speed(shard_dir, args.resolution, args.batches, args.batch_size, args.workers))
    result["targets"] = {"generation_64_per_core": 1000, "load_per_worker": 100}
    result["ok"] = result["generation_64"]["mixture_cpu"] >= 1000 and result["load"][0]["cpu_per_s"] >= 100
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        g = result["generation_64"]
        print(f"Shapes-5 generation @64px: {g['mixture_cpu']:.0f} samples/s per core (CPU time; wall {g['mixture_wall']:.0f}/s)")
        print("  per task: " + ", ".join(f"{t} {v:.0f}/s" for t, v in g["per_task_cpu"].items()))
        w = result["write"]
        print(f"wrote {w['samples']} samples @{w['resolution']}px, {w['bytes'] / 1e6:.1f} MB, {w['samples_per_s']:.0f} samples/s")
        for r in result["load"]:
            extra = f" (CPU time: {r['cpu_per_s']:.0f}/s per worker)" if "cpu_per_s" in r else ""
            print(f"loader @{args.resolution}px, {r['workers']} workers: {r['wall_per_s']:.0f} samples/s wall{extra}")
        print("targets met" if result["ok"] else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
